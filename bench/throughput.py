"""Offline throughput and batch-1 latency, for AstrAI and the peers.

Each system is loaded once and runs both workloads, so model loading is paid once and stays
out of every timed region. A system that fails is recorded with its error; the run goes on.
"""

from __future__ import annotations

import gc
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.context import Context
from bench.progress import log
from bench.systems import System
from bench.workload import Request, describe, offline_workload, random_ids


@dataclass
class Candidate:
    key: str
    factory: Callable[[], System]
    offline_requests: int | None  # None: the whole workload; else a fixed leading subset
    latency: bool  # batch-1 latency is the same for static and continuous: measure once
    unavailable: str | None = None


def _astrai(ctx: Context, max_len: int) -> list[Candidate]:
    from bench.systems import astrai

    missing = astrai.available()
    out = []
    for dtype in (torch.bfloat16, torch.float32):
        for scheduling in ("continuous", "static"):
            name = str(dtype).removeprefix("torch.")
            if dtype == torch.float32:
                subset = ctx.scale.fp32_requests
            else:
                subset = ctx.scale.static_bf16_requests if scheduling == "static" else None

            def factory(dtype=dtype, scheduling=scheduling):
                return astrai.AstraiSystem(dtype, scheduling, ctx.scale.batch_size, max_len)

            out.append(Candidate(f"astrai_{scheduling}_{name}", factory, subset,
                                 latency=scheduling == "continuous", unavailable=missing))
    return out


def _peers(ctx: Context) -> list[Candidate]:
    from bench.systems import hf, llamacpp

    out = []
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        out.append(Candidate(f"transformers_static_{name}",
                             lambda dtype=dtype: hf.TransformersSystem(dtype, min(ctx.scale.batch_size, ctx.scale.hf_requests)),
                             ctx.scale.hf_requests, latency=True))
    out.append(Candidate("llamacpp_sequential", lambda: llamacpp.LlamaCppSystem(n_ctx=2048),
                         ctx.scale.llamacpp_requests, latency=True, unavailable=llamacpp.available()))
    return out


def _latency_prompts(ctx: Context) -> dict[int, list[int]]:
    rng = random.Random(1)
    return {n: random_ids(rng, n) for n in ctx.scale.latency_prompts}


def _run_one(c: Candidate, requests: list[Request], ctx: Context, do_offline: bool,
             do_latency: bool) -> tuple[dict | None, dict | None]:
    prompts = _latency_prompts(ctx)
    start = time.perf_counter()
    system = c.factory()
    try:
        load_s = time.perf_counter() - start
        system.warmup()
        offline = latency = None
        if do_offline:
            subset = requests if c.offline_requests is None else requests[: c.offline_requests]
            log(f"[offline] {system.name}: {len(subset)} requests")
            res = system.offline(subset, ctx.scale.temperature).to_dict()
            res.update(name=system.name, status="ok", load_seconds=load_s,
                       subset=len(subset) < len(requests), workload=describe(subset))
            if res["subset"]:
                res["notes"].append(f"fixed subset: first {len(subset)} of {len(requests)} requests")
            log(f"[offline] {system.name}: {res['output_tok_s']:.1f} output tok/s")
            offline = res
        if do_latency and c.latency:
            latency = {"name": system.name, "status": "ok", "prompts": {}}
            for n, ids in prompts.items():
                r = system.latency(ids, ctx.scale.latency_decode_tokens).to_dict()
                latency["prompts"][str(n)] = r
                log(f"[latency] {system.name} prompt {n}: TTFT {r['ttft_s'] * 1e3:.0f} ms, "
                    f"decode {r['decode_tok_s']:.1f} tok/s")
        return offline, latency
    finally:
        system.close()
        del system
        gc.collect()


def run(ctx: Context, do_offline: bool = True, do_latency: bool = True) -> dict:
    scale = ctx.scale
    requests = offline_workload(scale.num_requests, scale.prompt_len, scale.output_len, seed=0)
    max_len = max(scale.prompt_len[1] + scale.output_len[1], max(scale.latency_prompts) + scale.latency_decode_tokens + 8)
    astrai, peers = _astrai(ctx, max_len), (_peers(ctx) if ctx.wants_peers() else [])
    # Most telling first, so a run cut short by its time budget still has the key comparisons.
    order = ["astrai_continuous_bfloat16", "llamacpp_sequential", "astrai_static_bfloat16",
             "transformers_static_bfloat16", "astrai_continuous_float32", "transformers_static_float32",
             "astrai_static_float32"]
    candidates = sorted(astrai + peers, key=lambda c: order.index(c.key))
    offline = {"workload": {**describe(requests), "seed": 0, "prompt_len": scale.prompt_len,
                            "output_len": scale.output_len, "batch_size": scale.batch_size,
                            "temperature": scale.temperature, "ignore_eos": True},
               "systems": {}}
    latency = {"decode_tokens": scale.latency_decode_tokens, "systems": {}}
    for c in candidates:
        if ctx.out_of_time():
            c.unavailable = ctx.out_of_time()
        if c.unavailable:
            skipped = {"status": "skipped", "reason": c.unavailable}
            if do_offline:
                offline["systems"][c.key] = skipped
            if do_latency and c.latency:
                latency["systems"][c.key] = skipped
            log(f"[skip] {c.key}: {c.unavailable}")
            continue
        try:
            off, lat = _run_one(c, requests, ctx, do_offline, do_latency)
        except Exception as error:  # one broken system must not sink the whole run
            failed = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc(limit=5)}
            log(f"[error] {c.key}: {failed['reason']}")
            off = failed if do_offline else None
            lat = failed if do_latency and c.latency else None
        if off is not None:
            offline["systems"][c.key] = off
        if lat is not None:
            latency["systems"][c.key] = lat
    out = {}
    if do_offline:
        out["offline"] = offline
    if do_latency:
        out["latency"] = latency
    return out
