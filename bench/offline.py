"""Offline batch: B requests x (P -> G) all at once (the issue's 64 x (128 -> 128)).

AstrAI's Engine.generate on B random-id prompts, greedy, ignore_eos, against
`llama-batched-bench -npp P -ntg G -npl B` (which prefills the B prompts together and then
decodes them together, without sampling); rounds interleaved, best reported. Output tok/s is
B x G over the whole wall time, prefill included, for both. transformers runs the same
requests once as one static batch.
"""

from __future__ import annotations

import gc
import traceback

import torch

from bench.context import Context
from bench.llamacpp_tools import batched_bench
from bench.machine import has_bf16_hardware
from bench.progress import log
from bench.workload import describe, fixed_workload


def _transformers(ctx: Context, model: str, requests) -> dict:
    from bench.systems.hf import TransformersSystem

    dtype = torch.bfloat16 if has_bf16_hardware() else torch.float32
    system = TransformersSystem(model, dtype, batch_size=len(requests))
    try:
        system.warmup()
        res = system.offline(requests, 0.0).to_dict()
        return {**res, "name": system.name, "status": "ok", "load_seconds": system.load_seconds}
    finally:
        system.close()
        gc.collect()


def run(ctx: Context) -> dict:
    from bench.systems.astrai import AstraiSystem

    s = ctx.scale
    model = ctx.model_path()
    out: dict = {"workload": {"batch": s.offline_batch, "prompt_tokens": s.offline_prompt,
                              "output_tokens": s.offline_output, "rounds": s.offline_rounds, "threads": ctx.threads,
                              "greedy": True, "ignore_eos": True},
                 "systems": {}}
    astrai_rounds, llama_rounds = [], []
    llama_error = None if ctx.wants_peers() else "--skip-peers"
    system = AstraiSystem(model, ctx.astrai)
    try:
        system.warmup()
        info = {"name": system.name, "load_seconds": system.load_seconds, "engine": system.describe()}
        for i in range(s.offline_rounds):
            if i and ctx.out_of_time():
                break
            requests = fixed_workload(s.offline_batch, s.offline_prompt, s.offline_output, seed=10 + i,
                                      token_range=ctx.model.token_range)
            astrai_rounds.append(system.offline(requests).to_dict())
            log(f"[offline] round {i + 1}: AstrAI {astrai_rounds[-1]['output_tok_s']:.1f} output tok/s")
            if llama_error is None:
                try:
                    llama_rounds.append(batched_bench(model, ctx.threads, prompt=s.offline_prompt,
                                                      gen=s.offline_output, batches=(s.offline_batch,))[0])
                    log(f"[offline] round {i + 1}: llama-batched-bench {llama_rounds[-1]['output_tok_s']:.1f} "
                        "output tok/s")
                except Exception as error:
                    llama_error = f"{type(error).__name__}: {error}"
                    log(f"[offline] llama-batched-bench: {llama_error}")
    finally:
        system.close()
        gc.collect()
    out["systems"]["astrai"] = {**info, "status": "ok", "rounds": astrai_rounds,
                                "best_output_tok_s": max(r["output_tok_s"] for r in astrai_rounds)}
    if llama_rounds:
        out["systems"]["llamacpp"] = {"name": "llama.cpp (llama-batched-bench)", "status": "ok", "rounds": llama_rounds,
                                      "best_output_tok_s": max(r["output_tok_s"] for r in llama_rounds),
                                      "best_decode_tok_s": max(r["speed_tg"] for r in llama_rounds)}
    else:
        out["systems"]["llamacpp"] = {"status": "skipped" if llama_error == "--skip-peers" else "error",
                                      "reason": llama_error}
    if ctx.wants_peers() and s.hf_offline and not ctx.out_of_time():
        requests = fixed_workload(s.offline_batch, s.offline_prompt, s.offline_output, seed=99,
                                  token_range=ctx.model.token_range)
        try:
            out["systems"]["transformers"] = _transformers(ctx, model, requests)
            out["systems"]["transformers"]["workload"] = describe(requests)
        except Exception as error:
            out["systems"]["transformers"] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                                              "traceback": traceback.format_exc(limit=5)}
    return out
