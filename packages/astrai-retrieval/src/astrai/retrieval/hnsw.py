"""HNSW: Malkov & Yashunin's hierarchical navigable small-world graph (skeleton: API first)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from .dense import Metric, check_metric


class HNSWIndex:
    """Approximate nearest neighbours over a layered proximity graph.

    - `M`: links per node on the upper layers (2 * M on layer 0); `ef_construction`: the
      candidate list while inserting; `ef_search`: the default candidate list while searching
      (a search uses max(ef, k)). Levels are drawn with mult = 1 / ln(M) from `seed`.
    - Neighbours are chosen with the paper's heuristic (Algorithm 4, keeping pruned candidates
      to fill the list), on insert and when a neighbour list overflows.
    - `delete(id)` marks the node (it still routes searches, never appears in results); once
      more than `max_deleted_fraction` of the nodes are marked, `compact()` runs: every live
      node that linked to a deleted one gets its list rebuilt from its live neighbours and their
      neighbours' (heuristic selection), then the deleted nodes are removed.
    - Filtered search (`allowed`) walks the whole graph but returns only allowed ids; when the
      allowed set is small (< `exact_filter_threshold` ids) it scores them exactly instead.
    - The graph search and inserts run in native code where a C++ compiler exists (see
      `native.py`), else in numpy / Python (one log line); both build the same graph.
    Not thread-safe: one writer at a time, and no search while writing (VectorStore locks).
    """

    def __init__(self, dim: int, *, M: int = 16, ef_construction: int = 200, ef_search: int = 64,
                 metric: Metric = "cosine", seed: int = 0, max_deleted_fraction: float = 0.2,
                 exact_filter_threshold: int = 2000, use_native: bool | None = None) -> None:
        self.dim = int(dim)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.metric = check_metric(metric)
        self.seed = seed
        self.max_deleted_fraction = max_deleted_fraction
        self.exact_filter_threshold = exact_filter_threshold

    @property
    def native(self) -> bool:
        """Whether the compiled graph kernels are in use."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __contains__(self, id: object) -> bool:
        raise NotImplementedError

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under `ids` (in order); an id already present is deleted first."""
        raise NotImplementedError

    def delete(self, id: int) -> bool:
        raise NotImplementedError

    def compact(self) -> None:
        """Repair the neighbour lists around deleted nodes and drop them now."""
        raise NotImplementedError

    def search(self, query: np.ndarray, k: int = 10, *, ef: int | None = None,
               allowed: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def search_batch(self, queries: np.ndarray, k: int = 10, *,
                     ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, source: str = "hnsw index") -> HNSWIndex:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> HNSWIndex:
        raise NotImplementedError
