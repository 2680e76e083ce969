"""Perplexity of the real Gemma 3 270M Q4_K_M file, computed llama-perplexity's way, vs llama.cpp.

    python -m bench.gemma_perplexity [--text tests/data/perplexity_long.txt] [--skip-peers]

llama-perplexity's method: the whole text tokenized with BOS, cut into n_ctx = 512-token windows
(as many whole windows as fit), each window's first token replaced by BOS and evaluated from an
empty cache; the next-token log-likelihood of the second half of each window (tokens 257..511,
255 per window) is averaged over all windows; PPL = exp(-mean). AstrAI runs the same windows
through its paged torch forward with the file dequantized to float32 ("none") and with the
default load ("auto": Q8_0 packed, the rest dequantized). The peers: `llama-perplexity -m FILE -f
TEXT -c 512 -b 512` on the file itself and on the same weights dequantized to F32
(`llama-quantize --allow-requantize FILE OUT F32`, f32 KV cache), the arithmetic of AstrAI's
"none" path. Prints one JSON object; a bench, never a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench.fixtures.gemma_file import gemma_gguf
from bench.peers import llama_tool

REPO = Path(__file__).resolve().parents[1]
N_CTX = 512


def astrai_perplexity(path: Path, text: str, quantization: str) -> dict:
    from astrai.model import ForwardBatch, load_model

    start = time.perf_counter()
    model, tokenizer = load_model(path, dtype=torch.float32, quantization=quantization)
    load_s = time.perf_counter() - start
    tokens = tokenizer.encode(text, add_special_tokens=True)
    chunks = len(tokens) // N_CTX
    first = N_CTX // 2
    c = model.config
    shape = (N_CTX // 16, 16, c.num_kv_heads, c.head_dim)
    nll, count = 0.0, 0
    start = time.perf_counter()
    for i in range(chunks):
        window = tokens[i * N_CTX : (i + 1) * N_CTX]
        window[0] = tokenizer.bos_token_id
        caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(c.num_layers)]
        batch = ForwardBatch.build([window], [0], [list(range(N_CTX // 16))], 16,
                                   logits_indices=range(first, N_CTX - 1))
        logprobs = torch.log_softmax(model(batch, caches, 16).double(), dim=-1)
        targets = torch.tensor(window[first + 1 :])
        nll -= float(logprobs.gather(1, targets[:, None]).sum())
        count += len(targets)
    return {"quantization": quantization, "ppl": math.exp(nll / count), "tokens": len(tokens), "chunks": chunks,
            "scored": count, "load_s": round(load_s, 1), "eval_s": round(time.perf_counter() - start, 1),
            "weights": model.weight_format()}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=REPO / "tests" / "data" / "perplexity_long.txt")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    model = gemma_gguf()
    text = args.text.read_text(encoding="utf-8")
    result = {"file": model.name, "text": str(args.text.relative_to(REPO)), "n_ctx": N_CTX,
              "astrai": [astrai_perplexity(model, text, q) for q in ("none", "auto")]}
    if not args.skip_peers:
        result["llama.cpp"] = llama_perplexity(model, args.text, [])
        with tempfile.TemporaryDirectory() as tmp:
            f32 = Path(tmp) / f"{model.stem}-F32.gguf"
            subprocess.run([str(llama_tool("llama-quantize")), "--allow-requantize", str(model), str(f32), "F32"],
                           check=True, capture_output=True)
            result["llama.cpp F32"] = llama_perplexity(f32, args.text, ["-ctk", "f32", "-ctv", "f32"])
        ref = result["llama.cpp"]["ppl"]
        result["ratio_none_vs_llama_cpp"] = result["astrai"][0]["ppl"] / ref
        result["ratio_auto_vs_llama_cpp"] = result["astrai"][1]["ppl"] / ref
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
