"""Prefix cache: a shared 1024-token system prompt with varied questions.

A miss gets a fresh random prefix every time; a hit reuses the warmed shared prefix. TTFT is
measured per request, alone, so only the cache decides the difference. AstrAI runs with its
defaults plus --astrai-args (prefix cache on, as by default). The eviction-policy hit rates
come from bench/cache_bench.py (owned by the cache package's helper).
"""

from __future__ import annotations

import gc
import importlib
import random
import traceback

from bench.context import Context
from bench.progress import bar, log
from bench.timing import median
from bench.workload import random_ids


def _prompts(ctx: Context) -> tuple[list[int], list[list[int]], list[list[int]]]:
    rng = random.Random(7)
    s = ctx.scale
    ids = ctx.model.token_range
    shared = random_ids(rng, s.prefix_len, ids)
    questions = [random_ids(rng, s.prefix_question_len, ids) for _ in range(s.prefix_trials + 1)]
    misses = [random_ids(rng, s.prefix_len, ids) + q for q in questions[1:]]
    hits = [shared + q for q in questions[1:]]
    return shared + questions[0], hits, misses


def _astrai(ctx: Context) -> dict:
    from bench.systems.astrai import AstraiSystem, available

    missing = available()
    if missing:
        return {"status": "skipped", "reason": missing}
    warm, hits, misses = _prompts(ctx)
    system = AstraiSystem(ctx.model_path(), ctx.astrai, enable_prefix_cache=True)
    try:
        system.warmup()
        system.stream_times(warm, 2)  # fills the cache with the shared prefix
        rows = {"hit": [], "miss": []}
        cached = {"hit": [], "miss": []}
        with bar(total=2 * len(hits), desc="prefix cache", unit="req") as pbar:
            for hit, miss in zip(hits, misses, strict=True):  # interleaved so drift hits both alike
                for kind, ids in (("miss", miss), ("hit", hit)):
                    start, stamps, final = system.stream_times(ids, 2)
                    rows[kind].append(stamps[0] - start)
                    cached[kind].append(getattr(final, "num_cached_tokens", None))
                    pbar.update(1)
        stats = system.stats()
    finally:
        system.close()
        gc.collect()
    return _summary(rows, cached, stats)


def _summary(rows: dict, cached: dict | None, stats: dict | None) -> dict:
    hit, miss = median(rows["hit"]), median(rows["miss"])
    out = {"status": "ok", "ttft_hit_ms": hit * 1e3, "ttft_miss_ms": miss * 1e3,
           "hit_over_miss": hit / miss, "samples": {k: [v * 1e3 for v in vs] for k, vs in rows.items()}}
    if cached is not None:
        out["cached_tokens"] = cached
    if stats is not None:
        out["engine_stats"] = {k: stats.get(k) for k in ("prefix_cache_queries", "prefix_cache_hits",
                                                          "num_cached_pages", "num_pages")}
    return out


def _eviction(ctx: Context) -> dict:
    try:
        module = importlib.import_module("bench.cache_bench")
    except ImportError as error:
        return {"status": "skipped", "reason": f"bench/cache_bench.py not available ({error})"}
    result = module.run(quick=ctx.quick)
    return {"status": "ok", **result} if isinstance(result, dict) else {"status": "ok", "result": result}


def run(ctx: Context) -> dict:
    out = {"prefix_tokens": ctx.scale.prefix_len, "question_tokens": ctx.scale.prefix_question_len,
           "trials": ctx.scale.prefix_trials}
    parts = [("astrai", _astrai), ("eviction", _eviction)]
    for key, fn in parts:
        if ctx.out_of_time():
            out[key] = {"status": "skipped", "reason": ctx.out_of_time()}
            continue
        try:
            out[key] = fn(ctx)
        except Exception as error:
            out[key] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc(limit=5)}
        log(f"[prefix] {key}: {_brief(out[key])}")
    return out


def _brief(d: dict) -> str:
    if "ttft_hit_ms" in d:
        return f"TTFT hit {d['ttft_hit_ms']:.0f} ms vs miss {d['ttft_miss_ms']:.0f} ms"
    return d.get("reason") or d.get("status", "?")
