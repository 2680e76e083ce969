"""llama.cpp's own benchmark tools, run as subprocesses on the same GGUF: `llama-bench`
(batch-1 decode tgN, prompt processing ppN) and `llama-batched-bench` (offline batches)."""

from __future__ import annotations

import json
import subprocess

from bench.peers import llama_tool


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0].rsplit('/', 1)[-1]} exited with {proc.returncode}: {proc.stderr[-1500:]}")
    return proc


def llama_bench(model: str, threads: int, *, prompts: tuple[int, ...] = (0,), gen: tuple[int, ...] = (0,),
                depths: tuple[int, ...] = (0,), repetitions: int = 1, timeout_s: float = 600) -> list[dict]:
    """One llama-bench invocation (`-o json`); one dict per test with its tokens/s samples.

    `-p 0 -n 128` is tg128 (batch-1 decode of 128 tokens); `-p 512 -n 0` is pp512."""
    cmd = [str(llama_tool("llama-bench")), "-m", model, "-t", str(threads), "-r", str(repetitions), "-o", "json",
           "-p", ",".join(map(str, prompts)), "-n", ",".join(map(str, gen)), "-d", ",".join(map(str, depths))]
    tests = json.loads(_run(cmd, timeout_s).stdout)
    keys = ("n_prompt", "n_gen", "n_depth", "n_threads", "avg_ts", "stddev_ts", "samples_ts", "avg_ns",
            "build_commit", "model_size", "type_k", "flash_attn", "n_batch", "n_ubatch")
    return [{k: t.get(k) for k in keys} | {"test": test_name(t), "command": " ".join(cmd[1:])} for t in tests]


def test_name(t: dict) -> str:
    """llama-bench's own labels: pp512, tg128, tg128 @ d128."""
    name = f"pp{t['n_prompt']}" if t.get("n_prompt") else f"tg{t['n_gen']}"
    if t.get("n_prompt") and t.get("n_gen"):
        name = f"pp{t['n_prompt']}+tg{t['n_gen']}"
    return name + (f" @ d{t['n_depth']}" if t.get("n_depth") else "")


def batched_bench(model: str, threads: int, *, prompt: int, gen: int, batches: tuple[int, ...],
                  timeout_s: float = 900) -> list[dict]:
    """llama-batched-bench `-npp P -ntg G -npl B` (jsonl): B sequences prefilled together, then
    decoded together. Adds output_tok_s = B x G over the whole time (prefill + decode), the
    same measure as AstrAI's Engine.generate wall clock."""
    context = max(batches) * (prompt + gen)
    cmd = [str(llama_tool("llama-batched-bench")), "-m", model, "-t", str(threads), "-tb", str(threads),
           "-c", str(context), "-npp", str(prompt), "-ntg", str(gen), "-npl", ",".join(map(str, batches)),
           "--output-format", "jsonl"]
    proc = _run(cmd, timeout_s)
    text = proc.stdout + "\n" + proc.stderr
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            row["output_tok_s"] = row["pl"] * row["tg"] / row["t"]
            row["command"] = " ".join(cmd[1:])
            rows.append(row)
    if not rows:
        raise RuntimeError(f"llama-batched-bench printed no results: {text[-1500:]}")
    return rows
