"""Cache-aware passage order for RAG prompts (RAGCache's idea, on a radix prefix cache).

A RAG prompt is `prefix tokens + passage 1 + ... + passage n + question`. The radix cache can
serve only a *prefix* of it, so the passages' order decides what is reused:
- "relevance": the retriever's order (best first). Two requests that retrieve the same
  passages in a different order share nothing past the prefix.
- "cache_aware": first, greedily, the passage that extends the longest cached prefix (asked of
  the engine's side-effect-free lookup through `cached_prefix_len`), while that grows the
  cached prefix; then the rest in a canonical order: most popular first (the count-min
  sketch), ties by a stable hash of the id. Popular passages thus settle at the front of many
  prompts, where their KV pages become shared prefixes, and the same passage set always
  yields the same prompt.

`PromptPassage.token_ids` must be the passage's tokens exactly as they appear in the prompt
(separators included): the prompt is the concatenation of the pieces' token ids, never a
re-tokenisation of their concatenated text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .popularity import PassagePopularity, passage_key

OrderMode = Literal["cache_aware", "relevance"]
ORDER_MODES: tuple[str, ...] = ("cache_aware", "relevance")

CachedPrefixLen = Callable[[Sequence[int]], int]
"""token ids -> how many leading tokens the prefix cache holds (no side effect), e.g.
`lambda ids: kv_manager.lookup(ids).cached_tokens`."""


@dataclass(frozen=True)
class PromptPassage:
    """A retrieved passage as it will be placed in a prompt; `rank` is its relevance rank (1 = best)."""

    id: str
    token_ids: tuple[int, ...]
    rank: int


def order_for_cache(passages: Sequence[PromptPassage], *, mode: OrderMode = "cache_aware",
                    popularity: PassagePopularity | None = None,
                    cached_prefix_len: CachedPrefixLen | None = None,
                    prefix_token_ids: Sequence[int] = ()) -> list[PromptPassage]:
    """The order to place `passages` in (see the module docstring). Does not record anything:
    callers count retrievals with `popularity.record(...)` themselves."""
    if mode not in ORDER_MODES:
        raise ValueError(f"order mode must be one of {', '.join(ORDER_MODES)}, got {mode!r}")
    by_rank = sorted(passages, key=lambda p: p.rank)
    if mode == "relevance" or len(by_rank) <= 1:
        return by_rank

    def canonical(p: PromptPassage) -> tuple[int, int]:
        return (-(popularity.estimate(p.id) if popularity else 0), passage_key(p.id))

    settled = sorted(by_rank, key=canonical)
    if cached_prefix_len is None:
        return settled
    greedy = _greedy_cached(by_rank, prefix_token_ids, cached_prefix_len, canonical)
    if greedy == settled:
        return settled
    # the greedy path only where it finds more cached tokens than the canonical order
    def cached(order: list[PromptPassage]) -> int:
        return cached_prefix_len([*prefix_token_ids, *(t for p in order for t in p.token_ids)])

    return greedy if cached(greedy) > cached(settled) else settled


def _greedy_cached(passages: list[PromptPassage], prefix: Sequence[int], cached_prefix_len: CachedPrefixLen,
                   canonical: Callable[[PromptPassage], tuple[int, int]]) -> list[PromptPassage]:
    """Repeatedly the passage that extends the longest cached prefix, while that grows it;
    the rest in canonical order."""
    remaining = list(passages)
    ordered: list[PromptPassage] = []
    prompt = list(prefix)
    cached = cached_prefix_len(prompt) if prompt else 0
    while remaining:
        gains = [(cached_prefix_len(prompt + list(p.token_ids)), -i) for i, p in enumerate(remaining)]
        best, neg_i = max(gains)
        if best <= cached:
            break
        chosen = remaining.pop(-neg_i)
        ordered.append(chosen)
        prompt += chosen.token_ids
        cached = best
    return ordered + sorted(remaining, key=canonical)
