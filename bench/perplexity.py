"""Perplexity of the run's GGUF, computed llama-perplexity's way, against llama-perplexity itself.

llama-perplexity's method: the whole text tokenized with BOS, cut into n_ctx = 512-token windows
(as many whole windows as fit), each window's first token replaced by BOS and evaluated from an
empty cache; the next-token log-likelihood of the second half of each window (tokens 257..511,
255 per window) is averaged over all windows; PPL = exp(-mean).

AstrAI runs the same windows three ways: "served" is what `astrai serve` computes (the file's
weights as the engine loads them, the native forward where it runs, a float16 KV cache as the
engine allocates for low-bit weights, like llama.cpp's default); "auto" the same weights through
the torch layers with a float32 cache; "none" the file dequantized to float32. The peers:
`llama-perplexity -m FILE -f TEXT -c 512 -b 512` on the file itself and (full runs) on the same
weights dequantized to F32 (`llama-quantize --allow-requantize FILE OUT F32`, f32 KV cache), the
arithmetic of AstrAI's "none" path. The text is tests/data/perplexity_long.txt (shipped with
the tests; ~2.3k tokens, four windows).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

import torch

from bench.context import Context
from bench.peers import llama_tool
from bench.progress import log

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "tests" / "data" / "perplexity_long.txt"
N_CTX = 512
PAGE = 16
VARIANTS = ("served", "auto", "none")


def astrai_perplexity(path: Path, text: str, variant: str) -> dict:
    """PPL of one AstrAI variant (see the module docstring) over the text's 512-token windows."""
    from astrai.model import ForwardBatch, ForwardModel, NativeForward, load_model

    start = time.perf_counter()
    model, tokenizer = load_model(path, dtype=torch.float32, quantization="none" if variant == "none" else "auto")
    forward: ForwardModel = model
    kv_dtype = torch.float32
    if variant == "served":
        forward = NativeForward.build(model) or model
        kv_dtype = torch.float16 if forward.low_bit else torch.float32
    load_s = time.perf_counter() - start
    tokens = tokenizer.encode(text, add_special_tokens=True)
    chunks = len(tokens) // N_CTX
    first = N_CTX // 2
    c = model.config
    shape = (N_CTX // PAGE, PAGE, c.num_kv_heads, c.head_dim)
    nll, count = 0.0, 0
    start = time.perf_counter()
    for i in range(chunks):
        window = tokens[i * N_CTX : (i + 1) * N_CTX]
        window[0] = tokenizer.bos_token_id
        caches = [(torch.zeros(shape, dtype=kv_dtype), torch.zeros(shape, dtype=kv_dtype))
                  for _ in range(c.num_layers)]
        batch = ForwardBatch.build([window], [0], [list(range(N_CTX // PAGE))], PAGE,
                                   logits_indices=range(first, N_CTX - 1))
        logprobs = torch.log_softmax(forward(batch, caches, PAGE).double(), dim=-1)
        targets = torch.tensor(window[first + 1 :])
        nll -= float(logprobs.gather(1, targets[:, None]).sum())
        count += len(targets)
    return {"variant": variant, "ppl": math.exp(nll / count), "tokens": len(tokens), "chunks": chunks,
            "scored": count, "load_s": round(load_s, 1), "eval_s": round(time.perf_counter() - start, 1),
            "weights": forward.weight_format(), "forward": forward.backend, "kernels": forward.kernels,
            "kv_dtype": str(kv_dtype).removeprefix("torch.")}


def llama_perplexity(path: Path, text_path: Path, extra: list[str]) -> dict:
    cmd = [str(llama_tool("llama-perplexity")), "-m", str(path), "-f", str(text_path), "-c", str(N_CTX),
           "-b", str(N_CTX), "-t", str(os.cpu_count() or 1), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", proc.stdout + proc.stderr)
    if found is None:
        raise RuntimeError(f"llama-perplexity printed no estimate: {(proc.stdout + proc.stderr)[-1500:]}")
    return {"ppl": float(found[1]), "stderr": float(found[2]),
            "command": " ".join(["llama-perplexity", *cmd[1:]]).replace(str(path), path.name)
                                                                 .replace(str(REPO) + "/", "")}


def llama_perplexity_f32(path: Path, text_path: Path) -> dict:
    """llama-perplexity on the file's weights dequantized to F32 by llama-quantize (f32 KV cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / f"{path.stem}-F32.gguf"
        subprocess.run([str(llama_tool("llama-quantize")), "--allow-requantize", str(path), str(f32), "F32"],
                       check=True, capture_output=True)
        return llama_perplexity(f32, text_path, ["-ctk", "f32", "-ctv", "f32"])


def measure(path: Path, text_path: Path, variants: tuple[str, ...], peers: bool, f32_peer: bool) -> dict:
    """Every requested AstrAI variant and llama.cpp peer; failures are recorded, not raised."""
    text = text_path.read_text(encoding="utf-8")
    out: dict = {"status": "ok", "file": path.name, "text": str(text_path.relative_to(REPO)), "n_ctx": N_CTX,
                 "astrai": {}}
    for variant in variants:
        out["astrai"][variant] = _guarded(lambda v=variant: astrai_perplexity(path, text, v))
        log(f"[perplexity] AstrAI {variant}: {_brief(out['astrai'][variant])}")
    if peers:
        out["llama.cpp"] = _guarded(lambda: llama_perplexity(path, text_path, []))
        log(f"[perplexity] llama-perplexity: {_brief(out['llama.cpp'])}")
        if f32_peer:
            out["llama.cpp F32"] = _guarded(lambda: llama_perplexity_f32(path, text_path))
            log(f"[perplexity] llama-perplexity F32: {_brief(out['llama.cpp F32'])}")
        ref = out["llama.cpp"].get("ppl")
        for variant, row in out["astrai"].items():
            if ref and row.get("ppl"):
                out[f"ratio_{variant}_vs_llama_cpp"] = row["ppl"] / ref
    return out


def _guarded(fn) -> dict:
    try:
        return {"status": "ok", **fn()}
    except Exception as error:
        return {"status": "error", "reason": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=4)}


def _brief(row: dict) -> str:
    return f"PPL {row['ppl']:.4f}" if row.get("ppl") else row.get("reason", "?")[:200]


def run(ctx: Context) -> dict:
    """The section: the served variant always; in full runs also "auto", "none" and the F32 peer."""
    variants = ("served",) if ctx.quick else VARIANTS
    return measure(Path(ctx.model_path()), TEXT, variants, peers=ctx.wants_peers(), f32_peer=not ctx.quick)
