"""Cache-aware vs relevance passage order on a Zipf passage workload, against the real radix
prefix cache (astrai.cache.KVCacheManager with a 1-float KV: the tree, pages, locks and
eviction are the engine's own; only the K/V bytes are skipped).

Each request retrieves `k` distinct passages drawn from a Zipf(s) popularity over `passages`
passages, in a random relevance order (what a retriever returns does not follow popularity),
and builds `system prompt + passages + question`; the cache hit rate is cached prompt tokens /
prompt tokens, exactly as the engine counts it (open() of the prompt). Policies:

- relevance:   the retriever's order;
- popularity:  canonical order by the count-min sketch (no lookup);
- cache_aware: astrai.retrieval.order_for_cache with the side-effect-free KVCacheManager.lookup.

    python -m bench.retrieval.rag_order_sim [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from astrai.cache import KVCacheManager
from astrai.retrieval import PassagePopularity, PromptPassage, order_for_cache


def zipf_draw(rng: np.random.Generator, weights: np.ndarray, k: int) -> list[int]:
    """k distinct passage indexes, each draw proportional to its Zipf weight."""
    return rng.choice(len(weights), size=k, replace=False, p=weights).tolist()


def simulate(policy: str, *, passages: int, k: int, requests: int, zipf_s: float, passage_tokens: int,
             system_tokens: int, question_tokens: int, cache_passages: float, page_size: int = 16,
             seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vocab = 40_000
    texts = [tuple(rng.integers(100, vocab, passage_tokens).tolist()) for _ in range(passages)]
    system = rng.integers(100, vocab, system_tokens).tolist()
    weights = 1.0 / np.arange(1, passages + 1) ** zipf_s
    weights /= weights.sum()
    prompt_len = system_tokens + k * passage_tokens + question_tokens
    num_pages = int(cache_passages * passage_tokens / page_size) + 2 * (prompt_len // page_size + 2)
    kv = KVCacheManager(1, 1, 1, page_size=page_size, num_pages=num_pages, dtype=torch.float32)
    popularity = PassagePopularity(1 << 12)
    hit = total = 0
    started = time.perf_counter()
    for r in range(requests):
        chosen = zipf_draw(rng, weights, k)
        retrieved = [PromptPassage(f"passage-{i}", texts[i], rank) for rank, i in enumerate(chosen, start=1)]
        popularity.record(p.id for p in retrieved)
        if policy == "relevance":
            ordered = order_for_cache(retrieved, mode="relevance")
        elif policy == "popularity":
            ordered = order_for_cache(retrieved, popularity=popularity)
        else:
            ordered = order_for_cache(retrieved, popularity=popularity, prefix_token_ids=system,
                                      cached_prefix_len=lambda ids: kv.lookup(ids).cached_tokens)
        question = rng.integers(100, vocab, question_tokens).tolist()
        prompt = system + [t for p in ordered for t in p.token_ids] + question
        seq = f"r{r}"
        hit += kv.open(seq, prompt)
        total += len(prompt)
        assert kv.reserve(seq, len(prompt) + 1)
        kv.commit(seq, prompt)
        kv.close(seq, prompt)
    kv.check_invariants()
    return {"policy": policy, "hit_rate": hit / total, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    base = dict(passages=500, k=5, requests=400 if args.quick else 2000, passage_tokens=300, system_tokens=48,
                question_tokens=24)
    grid = [dict(zipf_s=s, cache_passages=c) for s in (0.8, 1.0, 1.2) for c in (25, 100)]
    if args.quick:
        grid = [dict(zipf_s=1.0, cache_passages=25), dict(zipf_s=1.0, cache_passages=100)]
    rows = []
    for cell in grid:
        results = {p: simulate(p, **base, **cell) for p in ("relevance", "popularity", "cache_aware")}
        row = {**cell, **{p: round(r["hit_rate"], 4) for p, r in results.items()},
               "cache_aware_vs_relevance": round(results["cache_aware"]["hit_rate"]
                                                 / max(results["relevance"]["hit_rate"], 1e-9), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": base, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
