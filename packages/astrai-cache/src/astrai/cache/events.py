"""What the cache reports outward: counters for metrics, events for traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

EventKind = Literal["allocated", "shared", "copied", "freed", "evicted"]
PAGE_EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)  # the one list: traces and tools read it


@dataclass(frozen=True)
class CacheEvent:
    """One page-level happening. `pages` are page ids; for "copied" they are (src, dst) pairs."""

    kind: EventKind
    pages: list = field(default_factory=list)
    seq_id: object = None


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache. free + evictable + in_use == num_pages always holds.

    `cached_pages` counts every page the prefix tree holds; `evictable_pages` those of them no
    sequence is using; `in_use_pages` everything held by a sequence or locked for one.
    """

    num_pages: int
    page_size: int
    free_pages: int
    cached_pages: int
    evictable_pages: int
    in_use_pages: int
    num_sequences: int
    tokens_queried: int
    tokens_hit: int
    evicted_pages: int
    cow_copies: int
    allocated_pages: int
    freed_pages: int

    @property
    def hit_rate(self) -> float:
        return self.tokens_hit / self.tokens_queried if self.tokens_queried else 0.0

    @property
    def usage(self) -> float:
        """Fraction of pages not free (cached pages count as used)."""
        return 1.0 - self.free_pages / self.num_pages
