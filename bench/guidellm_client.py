"""One maintained OpenAI-server benchmark client for every server: guidellm, run as a
subprocess from its own venv (bench/.peers/guidellm-venv), its JSON report parsed.

Offline by construction: the synthetic prompts are sized with a local tokenizer folder exported
from the run's GGUF (no hub look-up), and HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set.
One worker process drives all streams (asyncio), so the client takes as little of the shared
cores as it can; the same client, settings and workload go to both servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.peers import PEERS_DIR, guidellm_cli

TOKENIZERS_DIR = PEERS_DIR / "tokenizers"


def local_tokenizer(gguf: str | Path) -> Path:
    """A Hugging Face tokenizer folder for a GGUF, exported once: AstrAI's own tokenizer of the
    file (built from its vocabulary, the same ids as llama.cpp's; SentencePiece and byte-level
    BPE alike) saved as tokenizer.json, which transformers in guidellm's venv loads as a fast
    tokenizer. Re-exported when the GGUF's size or time stamp changes."""
    gguf = Path(gguf)
    folder = TOKENIZERS_DIR / gguf.stem
    info = gguf.stat()
    stamp = f"{gguf.resolve()} {info.st_size} {info.st_mtime_ns}"
    source = folder / "source.txt"
    if (folder / "tokenizer.json").exists() and source.exists() and source.read_text() == stamp:
        return folder
    from astrai.model import load_model

    _, tokenizer = load_model(gguf)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.backend.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokenizer.bos_token,
              "eos_token": tokenizer.eos_token, "model_max_length": 1 << 20}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    source.write_text(stamp)
    return folder


def scenario(target: str, model: str, tokenizer: Path, concurrency: int, requests: int, prompt_tokens: int,
             output_tokens: int, out_json: Path, seed: int = 42) -> dict:
    """guidellm's scenario file: concurrent streams, fixed-size synthetic prompts, greedy,
    exactly `output_tokens` per request (guidellm sends max_tokens + ignore_eos)."""
    return {"spec": {
        "backend": {"kind": "openai_http", "target": target, "model": model, "request_format": "/v1/completions",
                    "extras": {"body": {"temperature": 0.0}}, "timeout": 1800},
        "profile": {"kind": "concurrent", "streams": [concurrency]},
        "constraints": [{"kind": "max_requests", "count": requests}],
        "tokenizer": {"kind": "huggingface_auto", "model": str(tokenizer)},
        "data": [{"kind": "synthetic_text", "prompt_tokens": prompt_tokens, "output_tokens": output_tokens}],
        # Generate exactly the prompts the run sends, before it starts: by default guidellm's data
        # worker keeps generating ahead (prefetch 4096) during the measurement and took ~75% of
        # one of the two cores away from the server under test (TTFT@1024 2.5 s -> 5 s).
        "data_loader": {"kind": "pytorch", "samples": requests},
        "seed": {"kind": "static", "value": seed},
        "outputs": [{"kind": "json", "path": str(out_json)}],
    }}


def run(target: str, model: str, *, tokenizer: Path, concurrency: int, requests: int, prompt_tokens: int,
        output_tokens: int, seed: int = 42, timeout_s: float = 1800) -> dict:
    """Run one guidellm benchmark (prompts sized by `tokenizer`, a `local_tokenizer` folder);
    returns the summary (and the raw command for the record)."""
    with tempfile.TemporaryDirectory(prefix="guidellm-") as tmp:
        out = Path(tmp) / "report.json"
        spec = scenario(target, model, tokenizer, concurrency, requests, prompt_tokens, output_tokens, out, seed)
        config = Path(tmp) / "scenario.json"
        config.write_text(json.dumps(spec, indent=1))
        cmd = [str(guidellm_cli()), "run", "--scenario", str(config), "--disable-console-interactive"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "GUIDELLM__MAX_WORKER_PROCESSES": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"guidellm exited with {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
        report = json.loads(out.read_text())
    summary = summarize(report)
    if (summary.get("completed") or 0) < requests:  # keep guidellm's own account of the shortfall
        summary["console_tail"] = (proc.stdout + proc.stderr)[-3000:]
    summary["client"] = "guidellm"
    summary["scenario"] = spec["spec"] | {"outputs": "(temporary)"}
    return summary


def _stat(metrics: dict, name: str, status: str = "successful") -> dict:
    return (metrics.get(name) or {}).get(status) or {}


def summarize(report: dict) -> dict:
    """The numbers the report needs from guidellm's JSON (one benchmark per run)."""
    bench = report["benchmarks"][0]
    m = bench["metrics"]
    totals = m["request_totals"]
    ok = _stat(m, "output_token_count")
    out_tokens = ok.get("total_sum") or 0
    duration = bench.get("duration") or 0

    def pct(name: str, p: str) -> float | None:
        return (_stat(m, name).get("percentiles") or {}).get(p)

    return {
        "completed": totals.get("successful"), "errored": totals.get("errored"),
        "incomplete": totals.get("incomplete"), "duration_s": duration,
        "output_tokens": out_tokens, "prompt_tokens": _stat(m, "prompt_token_count").get("total_sum"),
        # guidellm's own rate over the benchmark window, and the plain total / duration as a check
        "output_tok_s": _stat(m, "output_tokens_per_second").get("mean"),
        "output_tok_s_total_over_duration": out_tokens / duration if duration else None,
        "request_s": _stat(m, "requests_per_second").get("mean"),
        "ttft_p50_ms": pct("time_to_first_token_ms", "p50"), "ttft_p99_ms": pct("time_to_first_token_ms", "p99"),
        "itl_p50_ms": pct("inter_token_latency_ms", "p50"), "itl_p99_ms": pct("inter_token_latency_ms", "p99"),
        "tpot_p50_ms": pct("time_per_output_token_ms", "p50"),
        "latency_p50_s": pct("request_latency", "p50"),
        "concurrency_mean": _stat(m, "request_concurrency").get("mean"),
        "warnings": [w.get("code") for w in bench.get("warnings") or [] if isinstance(w, dict)],
    }
