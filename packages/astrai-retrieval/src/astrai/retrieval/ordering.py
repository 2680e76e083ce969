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
    remaining = list(by_rank)
    ordered: list[PromptPassage] = []
    if cached_prefix_len is not None:
        prompt = list(prefix_token_ids)
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

    def canonical(p: PromptPassage) -> tuple[int, int]:
        return (-(popularity.estimate(p.id) if popularity else 0), passage_key(p.id))

    return ordered + sorted(remaining, key=canonical)

