"""Serving over HTTP: `astrai serve` against `llama-server -np N`, one client for both.

guidellm (bench/guidellm_client.py) sends the same synthetic workload to both servers:
fixed-size prompts (128 tokens by the GGUF's own tokenizer), exactly 128 output tokens
(max_tokens + ignore_eos), greedy, streamed, at concurrency 1, 16 and 64. `astrai serve` runs
once with its defaults (plus --astrai-args); llama-server is started per level with -np N
slots (continuous batching is its default) and the same thread count. Within a level the
servers alternate (A, B, A, B) and the best round is reported; every run has its own seed,
so no prompt is ever sent to a server twice and no prefix cache helps. The long-prompt TTFT
(1024 tokens) runs on the -np 1 server. Both servers' resident memory is recorded.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

import httpx

from bench import guidellm_client
from bench.context import Context
from bench.peers import guidellm_cli
from bench.progress import log
from bench.server_process import AstraiServer, LlamaServer

LOWER_IS_BETTER = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "tpot_p50_ms", "latency_p50_s")
HIGHER_IS_BETTER = ("output_tok_s", "output_tok_s_total_over_duration", "request_s")


def _warm(base_url: str, model: str) -> None:
    """One short request, so one-time costs (allocation, kernel selection) stay out of the runs."""
    body = {"model": model, "prompt": "Hello, how are you today?", "max_tokens": 8, "temperature": 0.0}
    httpx.post(f"{base_url}/v1/completions", json=body, timeout=300.0).raise_for_status()


def best_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return {}
    best = {}
    for key in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            best[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    best["completed"] = min(r.get("completed") or 0 for r in ok)
    best["errored"] = max(r.get("errored") or 0 for r in ok)
    return best


def _one(server, model: str, *, tokenizer: Path, concurrency: int, requests: int, prompt: int, output: int,
         seed: int) -> dict:
    try:
        res = guidellm_client.run(server.base_url, model, tokenizer=tokenizer, concurrency=concurrency,
                                  requests=requests, prompt_tokens=prompt, output_tokens=output, seed=seed)
        res["status"] = "ok" if res.get("completed") else "error"
        if not res.get("completed"):
            res["reason"] = "no request completed"
    except Exception as error:
        res = {"status": "error", "reason": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=4)}
    return res


def _brief(res: dict) -> str:
    if res.get("status") != "ok":
        return res.get("reason", "?")[:200]
    return (f"{res['completed']} done, {res['output_tok_s']:.1f} out tok/s, TTFT p50 {res['ttft_p50_ms']:.0f} ms, "
            f"ITL p50 {res['itl_p50_ms']:.1f} ms")


def _compare(ctx: Context, servers: dict, models: dict, *, tokenizer: Path, concurrency: int, requests: int,
             prompt: int, output: int, rounds: int, seed0: int, label: str) -> dict:
    """Alternate the servers for `rounds` rounds of the same workload; each run its own seed."""
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for rnd in range(rounds):
        if rnd and ctx.out_of_time():
            break
        for name, server in servers.items():
            res = _one(server, models[name], tokenizer=tokenizer, concurrency=concurrency, requests=requests,
                       prompt=prompt, output=output, seed=seed0 + 97 * rnd)
            runs[name].append(res)
            log(f"[serving] {label} {name} round {rnd + 1}: {_brief(res)}")
    return {"concurrency": concurrency, "requests": requests, "prompt_tokens": prompt, "output_tokens": output,
            "systems": {name: {"runs": rs, "best": best_of(rs)} for name, rs in runs.items()}}


def _start_llama(ctx: Context, stack: contextlib.ExitStack, model: str, level: int, slot: int,
                 out: dict) -> tuple[LlamaServer, str] | None:
    """llama-server -np level for this level, or None (skipped or failed: AstrAI still runs)."""
    key = f"llamacpp_np{level}"
    if not ctx.wants_peers():
        return None
    try:
        llama = stack.enter_context(LlamaServer(model, level, slot, ctx.threads, []))
        llama_model = llama.model_id()
        _warm(llama.base_url, llama_model)
    except Exception as error:
        out["servers"][key] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
        log(f"[serving] llama-server -np {level}: {error}")
        return None
    out["servers"][key] = {"command": " ".join(llama.args), "load_seconds": llama.load_seconds,
                           "rss_after_load_bytes": llama.rss()}
    stack.callback(lambda: out["servers"][key].__setitem__("rss_after_runs_bytes", llama.rss()))
    return llama, llama_model


def run(ctx: Context) -> dict:
    s = ctx.scale
    model = ctx.model_path()
    guidellm_cli()  # a missing client is a clear error before any server starts
    tokenizer = guidellm_client.local_tokenizer(model)
    out: dict = {"status": "ok", "client": "guidellm", "threads": ctx.threads, "tokenizer": str(tokenizer),
                 "astrai_args": ctx.astrai.serve_args, "levels": {}, "servers": {}}
    base_slot = s.serving_prompt_tokens + s.serving_output_tokens + 128  # slack: tokenizers may differ by a BOS
    long_slot = max(base_slot, s.ttft_prompt_tokens + s.ttft_output_tokens + 128)
    levels = list(s.serving_concurrency)
    if 1 not in levels:
        levels.insert(0, 1)  # the long-prompt TTFT runs on the -np 1 server
    with AstraiServer(model, ctx.astrai.serve_args) as astrai:
        astrai_model = astrai.model_id()
        out["servers"]["astrai"] = {"command": " ".join(astrai.args), "load_seconds": astrai.load_seconds,
                                    "rss_after_load_bytes": astrai.rss()}
        _warm(astrai.base_url, astrai_model)
        for level in levels:
            if ctx.out_of_time():
                out["levels"][str(level)] = {"status": "skipped", "reason": ctx.out_of_time()}
                continue
            with contextlib.ExitStack() as stack:
                servers, models = {"astrai": astrai}, {"astrai": astrai_model}
                llama = _start_llama(ctx, stack, model, level, long_slot if level == 1 else base_slot, out)
                if llama is not None:
                    servers["llamacpp"], models["llamacpp"] = llama
                if level in s.serving_concurrency:
                    out["levels"][str(level)] = _compare(
                        ctx, servers, models, tokenizer=tokenizer, concurrency=level, requests=s.serving_requests(level),
                        prompt=s.serving_prompt_tokens, output=s.serving_output_tokens, rounds=s.serving_rounds,
                        seed0=1000 * level, label=f"c={level}")
                if level == 1 and not ctx.out_of_time():
                    out["ttft_long"] = _compare(
                        ctx, servers, models, tokenizer=tokenizer, concurrency=1, requests=s.ttft_requests, prompt=s.ttft_prompt_tokens,
                        output=s.ttft_output_tokens, rounds=s.serving_rounds, seed0=555,
                        label=f"TTFT@{s.ttft_prompt_tokens}")
        out["servers"]["astrai"]["rss_after_runs_bytes"] = astrai.rss()
    return out
