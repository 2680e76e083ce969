"""Cache-aware passage order against the real radix prefix cache (astrai.cache), popularity,
and the Zipf workload target: >= 1.5x the prefix-cache hit rate of relevance order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astrai.cache import KVCacheManager
from astrai.retrieval import PassagePopularity, PromptPassage, order_for_cache, passage_key

PAGE = 4


def manager(pages: int = 512) -> KVCacheManager:
    return KVCacheManager(1, 1, 1, page_size=PAGE, num_pages=pages, dtype=torch.float32)


def serve(kv: KVCacheManager, seq: str, prompt: list[int]) -> int:
    """What the engine does with a prompt: open (cached tokens), reserve, commit, close."""
    cached = kv.open(seq, prompt)
    assert kv.reserve(seq, len(prompt) + 1)
    kv.commit(seq, prompt)
    kv.close(seq, prompt)
    return cached


def passage(name: str, length: int = 12) -> PromptPassage:
    base = (passage_key(name) % 1000) * 100
    return PromptPassage(name, tuple(range(base, base + length)), 0)


def ranked(*ps: PromptPassage) -> list[PromptPassage]:
    return [PromptPassage(p.id, p.token_ids, rank) for rank, p in enumerate(ps, start=1)]


def test_relevance_mode_keeps_rank_order():
    a, b, c = passage("a"), passage("b"), passage("c")
    assert [p.id for p in order_for_cache(ranked(c, a, b), mode="relevance")] == ["c", "a", "b"]
    with pytest.raises(ValueError):
        order_for_cache(ranked(a), mode="random")


def test_cached_passages_come_first_in_their_cached_order():
    kv = manager()
    system = list(range(1, 9))
    a, b, c = passage("a"), passage("b"), passage("c")
    serve(kv, "warm", system + list(b.token_ids) + list(a.token_ids) + [7, 7, 7])
    order = order_for_cache(ranked(a, c, b), prefix_token_ids=system,
                            cached_prefix_len=lambda ids: kv.lookup(ids).cached_tokens)
    assert [p.id for p in order][:2] == ["b", "a"]
    prompt = system + [t for p in order for t in p.token_ids]
    assert kv.lookup(prompt).cached_tokens >= len(system) + 24 - PAGE
    before = kv.stats()
    order_for_cache(ranked(a, c, b), cached_prefix_len=lambda ids: kv.lookup(ids).cached_tokens)
    assert kv.stats() == before  # ordering only looks


def test_canonical_order_is_by_popularity_then_stable_hash():
    popularity = PassagePopularity(1024)
    ps = [passage(n) for n in "abcdef"]
    popularity.record(["e", "e", "e", "b", "b"])
    first = order_for_cache(ranked(*ps), popularity=popularity)
    again = order_for_cache(ranked(*reversed(ps)), popularity=popularity)
    assert [p.id for p in first] == [p.id for p in again]  # same set, same prompt
    assert [p.id for p in first][:2] == ["e", "b"]
    assert popularity.estimate("e") == 3 and popularity.estimate("zzz") == 0


def zipf_hit_rate(policy: str, requests: int = 300, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    n, k, length = 200, 5, 40
    weights = 1.0 / np.arange(1, n + 1)
    weights /= weights.sum()
    texts = [tuple(rng.integers(10, 50_000, length).tolist()) for _ in range(n)]
    system = list(range(1, 17))
    kv = manager(pages=30 * length // PAGE)  # room for ~30 passages: eviction matters
    popularity = PassagePopularity(1 << 12)
    hit = total = 0
    for r in range(requests):
        chosen = rng.choice(n, size=k, replace=False, p=weights).tolist()
        retrieved = [PromptPassage(f"p{i}", texts[i], rank) for rank, i in enumerate(chosen, start=1)]
        popularity.record(p.id for p in retrieved)
        if policy == "relevance":
            ordered = order_for_cache(retrieved, mode="relevance")
        else:
            ordered = order_for_cache(retrieved, popularity=popularity, prefix_token_ids=system,
                                      cached_prefix_len=lambda ids: kv.lookup(ids).cached_tokens)
        prompt = system + [t for p in ordered for t in p.token_ids] + rng.integers(10, 50_000, 8).tolist()
        hit += serve(kv, f"r{r}", prompt)
        total += len(prompt)
    kv.check_invariants()
    return hit / total


def test_zipf_workload_cache_aware_beats_relevance_by_1_5x():
    relevance = zipf_hit_rate("relevance")
    cache_aware = zipf_hit_rate("cache_aware")
    assert cache_aware >= 1.5 * relevance, (cache_aware, relevance)
