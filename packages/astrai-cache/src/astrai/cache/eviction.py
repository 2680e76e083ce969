"""Eviction policies for the radix prefix cache: which unlocked leaf goes first.

The tree owns structure (nodes, pages, locks); a policy owns order. The tree tells the policy
what happened (a match or insert used a path, a node was created or split, a leaf became
evictable) and asks it for the next victim. Both policies keep a lazy min-heap of evictable
leaves keyed by `priority(node)`: an entry is stale once its node was re-offered (its `stamp`
moved on), left the evictable set, or changed priority, and is skipped or re-queued on pop.

- `LRUPolicy`: least recently used first.
- `TinyLFUPolicy`: lowest estimated use frequency first (a Count-Min Sketch keyed by a hash
  chain of the prefix up to each node's first page), least recently used among equals, so a
  burst of one-off prompts cannot flush a system prompt that many requests share.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from .sketch import CountMinSketch

if TYPE_CHECKING:
    from .radix import RadixNode

EVICTION_POLICIES = ("tinylfu", "lru")


class EvictionPolicy:
    """Orders the tree's evictable leaves; subclasses define `priority` (lowest goes first).

    Per-node policy state lives in the node's `last_access`, `freq_key` and `stamp` slots,
    which only the policy writes.
    """

    name: ClassVar[str]

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._clock = 0
        self._heap: list[tuple[tuple[int, int], int, RadixNode]] = []
        self._next_stamp = 0

    # ---- what the tree reports -----------------------------------------------------------

    def on_create(self, node: RadixNode, parent: RadixNode) -> None:
        """A new node was hung under `parent`."""

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        """A node was cut in two: `upper` took its first pages and its place, `lower` the rest."""
        upper.last_access = lower.last_access

    def on_use(self, path: Sequence[RadixNode], counted: Sequence[RadixNode]) -> None:
        """A match or insert went through `path`; `counted` are the nodes whose use counts once more."""
        self._clock += 1
        for node in path:
            node.last_access = self._clock

    def priority(self, node: RadixNode) -> tuple[int, int]:
        raise NotImplementedError

    # ---- ordering ------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Heap entries, stale ones included (the tree rebuilds when they pile up)."""
        return len(self._heap)

    def needs_rebuild(self) -> bool:
        """True when every queued priority may be out of date (e.g. the sketch halved)."""
        return False

    def offer(self, node: RadixNode) -> None:
        """(Re)queue an evictable leaf at its current priority; older entries for it go stale."""
        self._next_stamp += 1
        node.stamp = self._next_stamp
        heapq.heappush(self._heap, (self.priority(node), node.stamp, node))

    def rebuild(self, leaves: Iterable[RadixNode]) -> None:
        """Start over from the current evictable leaves."""
        self._heap = []
        for node in leaves:
            self.offer(node)

    def pop(self, evictable: Callable[[RadixNode], bool]) -> RadixNode | None:
        """The evictable leaf to drop next (taken off the queue), or None if there is none."""
        while self._heap:
            prio, stamp, node = heapq.heappop(self._heap)
            if node.stamp != stamp or not evictable(node):
                continue
            if prio != self.priority(node):
                self.offer(node)
                continue
            return node
        return None

    def forget(self, node: RadixNode) -> None:
        """`node` left the tree: any entry still queued for it is stale."""
        node.stamp = -1


class LRUPolicy(EvictionPolicy):
    """Least recently used first."""

    name = "lru"

    def priority(self, node: RadixNode) -> tuple[int, int]:
        return 0, node.last_access


def _chain(prev: int, page_tokens: Sequence[int]) -> int:
    """Hash of a prefix up to and including one more page (a sketch key, never a match key)."""
    return hash((prev, tuple(page_tokens)))


class TinyLFUPolicy(EvictionPolicy):
    """Lowest estimated frequency first, least recently used among equals."""

    name = "tinylfu"

    def __init__(self, page_size: int, sketch_width: int) -> None:
        super().__init__(page_size)
        self.sketch = CountMinSketch(sketch_width)
        self._sketch_resets = 0

    def _last_hash(self, node: RadixNode) -> int:
        """The chain hash of the prefix up to and including `node`'s last page (0 for the root)."""
        ps = self.page_size
        h = node.freq_key
        for i in range(1, len(node.pages)):
            h = _chain(h, node.key[i * ps : (i + 1) * ps])
        return h

    def on_create(self, node: RadixNode, parent: RadixNode) -> None:
        node.freq_key = _chain(self._last_hash(parent), node.key[: self.page_size])

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        super().on_split(upper, lower)
        upper.freq_key = lower.freq_key  # the old node's key: the prefix up to its first page
        lower.freq_key = _chain(self._last_hash(upper), lower.key[: self.page_size])
        # every use of the old node went through its lower part too
        self.sketch.add(lower.freq_key, self.sketch.estimate(upper.freq_key))

    def on_use(self, path: Sequence[RadixNode], counted: Sequence[RadixNode]) -> None:
        super().on_use(path, counted)
        for node in counted:
            self.sketch.increment(node.freq_key)

    def priority(self, node: RadixNode) -> tuple[int, int]:
        return self.sketch.estimate(node.freq_key), node.last_access

    def needs_rebuild(self) -> bool:
        return self.sketch.resets != self._sketch_resets

    def rebuild(self, leaves: Iterable[RadixNode]) -> None:
        super().rebuild(leaves)
        self._sketch_resets = self.sketch.resets


def make_policy(eviction: str | EvictionPolicy, page_size: int, num_pages: int) -> EvictionPolicy:
    """A policy by name ("tinylfu" | "lru"), or the given policy object itself."""
    if isinstance(eviction, EvictionPolicy):
        return eviction
    if eviction == "tinylfu":
        return TinyLFUPolicy(page_size, num_pages)
    if eviction == "lru":
        return LRUPolicy(page_size)
    raise ValueError(f"eviction must be one of {EVICTION_POLICIES} or an EvictionPolicy, got {eviction!r}")
