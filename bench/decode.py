"""Batch-1: decode speed and prompt processing, one request alone.

AstrAI (in-process Engine, default settings) against `llama-bench -t T -p 0 -n 128` (tg128,
the issue's command; also at depth = the prompt length, which is what AstrAI decodes after)
and `llama-bench -p 512,1024 -n 0` (pp), rounds interleaved A, B, A, B, best round reported.
transformers (fp32 on a CPU without bf16 hardware) runs the same requests once as the
"just use transformers" baseline. Every AstrAI round uses fresh random prompts, so its
prefix cache (on by default) never helps.
"""

from __future__ import annotations

import gc
import random
import traceback

import torch

from bench.context import Context
from bench.llamacpp_tools import llama_bench
from bench.machine import has_bf16_hardware
from bench.progress import log
from bench.workload import random_ids


def _astrai_round(system, ctx: Context, rng: random.Random) -> dict:
    s = ctx.scale
    start, stamps, _ = system.stream_times(random_ids(rng, s.decode_prompt, ctx.model.token_range), s.decode_tokens)
    row = {"decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "ttft_ms": (stamps[0] - start) * 1e3,
           "tokens": len(stamps), "prefill": {}}
    for n in s.prefill_prompts:
        start, stamps, _ = system.stream_times(random_ids(rng, n, ctx.model.token_range), 1)
        row["prefill"][str(n)] = {"ttft_ms": (stamps[0] - start) * 1e3, "prompt_tok_s": n / (stamps[0] - start)}
    return row


def _llama_round(ctx: Context, model: str) -> dict:
    s = ctx.scale
    tg = llama_bench(model, ctx.threads, prompts=(0,), gen=(s.decode_tokens,), depths=(0, s.decode_prompt))
    pp = llama_bench(model, ctx.threads, prompts=s.prefill_prompts, gen=(0,))
    row = {"tests": tg + pp, "prefill": {}}
    for t in tg:
        row["decode_tok_s" if not t["n_depth"] else "decode_tok_s_at_depth"] = t["avg_ts"]
    for t in pp:
        row["prefill"][str(t["n_prompt"])] = {"prompt_tok_s": t["avg_ts"], "ttft_ms": t["avg_ns"] / 1e6}
    return row


def _best(rounds: list[dict]) -> dict:
    """Best of the rounds: highest rate, lowest time; each metric on its own."""
    if not rounds:
        return {}
    best = {"decode_tok_s": max(r["decode_tok_s"] for r in rounds), "prefill": {}}
    if all("decode_tok_s_at_depth" in r for r in rounds):
        best["decode_tok_s_at_depth"] = max(r["decode_tok_s_at_depth"] for r in rounds)
    if all("ttft_ms" in r for r in rounds):
        best["ttft_ms"] = min(r["ttft_ms"] for r in rounds)
    for n in rounds[0]["prefill"]:
        best["prefill"][n] = {"ttft_ms": min(r["prefill"][n]["ttft_ms"] for r in rounds),
                              "prompt_tok_s": max(r["prefill"][n]["prompt_tok_s"] for r in rounds)}
    return best


def _transformers(ctx: Context, model: str) -> dict:
    from bench.systems.hf import TransformersSystem

    s = ctx.scale
    dtype = torch.bfloat16 if has_bf16_hardware() else torch.float32
    rng = random.Random(3)
    system = TransformersSystem(model, dtype, batch_size=1)
    try:
        system.warmup()
        lat = system.latency(random_ids(rng, s.decode_prompt, ctx.model.token_range), s.decode_tokens - 1)
        row = {"name": system.name, "status": "ok", "load_seconds": system.load_seconds,
               "decode_tok_s": lat.decode_tokens / lat.decode_seconds, "ttft_ms": lat.ttft_s * 1e3, "prefill": {}}
        for n in s.prefill_prompts:
            first = system.latency(random_ids(rng, n, ctx.model.token_range), 0)
            row["prefill"][str(n)] = {"ttft_ms": first.ttft_s * 1e3, "prompt_tok_s": n / first.ttft_s}
        return row
    finally:
        system.close()
        gc.collect()


def run(ctx: Context) -> dict:
    from bench.systems.astrai import AstraiSystem

    s = ctx.scale
    model = ctx.model_path()
    out: dict = {"workload": {"prompt_tokens": s.decode_prompt, "decode_tokens": s.decode_tokens,
                              "prefill_prompts": list(s.prefill_prompts), "rounds": s.rounds, "threads": ctx.threads,
                              "greedy": True, "ignore_eos": True},
                 "systems": {}}
    astrai_rounds, llama_rounds = [], []
    llama_error = None if ctx.wants_peers() else "--skip-peers"
    system = AstraiSystem(model, ctx.astrai)
    try:
        system.warmup()
        astrai_info = {"name": system.name, "load_seconds": system.load_seconds, "engine": system.describe()}
        rng = random.Random(1)
        for i in range(s.rounds):
            if i and ctx.out_of_time():
                break
            astrai_rounds.append(_astrai_round(system, ctx, rng))
            log(f"[decode] round {i + 1}: AstrAI {astrai_rounds[-1]['decode_tok_s']:.1f} tok/s")
            if llama_error is None:
                try:
                    llama_rounds.append(_llama_round(ctx, model))
                    log(f"[decode] round {i + 1}: llama-bench tg{s.decode_tokens} "
                        f"{llama_rounds[-1]['decode_tok_s']:.1f} tok/s")
                except Exception as error:  # a missing or broken peer must not sink AstrAI's numbers
                    llama_error = f"{type(error).__name__}: {error}"
                    log(f"[decode] llama-bench: {llama_error}")
    finally:
        system.close()
        gc.collect()
    out["systems"]["astrai"] = {**astrai_info, "status": "ok", "rounds": astrai_rounds, "best": _best(astrai_rounds)}
    if llama_rounds:
        out["systems"]["llamacpp"] = {"name": "llama.cpp (llama-bench)", "status": "ok", "rounds": llama_rounds,
                                      "best": _best(llama_rounds)}
    else:
        out["systems"]["llamacpp"] = {"status": "skipped" if llama_error == "--skip-peers" else "error",
                                      "reason": llama_error}
    if ctx.wants_peers() and not ctx.out_of_time():
        try:
            out["systems"]["transformers"] = _transformers(ctx, model)
        except Exception as error:
            out["systems"]["transformers"] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                                              "traceback": traceback.format_exc(limit=5)}
    return out
