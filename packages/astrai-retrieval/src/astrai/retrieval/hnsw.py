"""HNSW: Malkov & Yashunin's hierarchical navigable small-world graph, with deletes.

The graph's arrays and the Python reference algorithms live in graph.py; the native twins in
csrc/hnsw.cpp (loaded by native.py). This class owns the id mapping, level draws, growth,
deletion and compaction, filtered search and serialisation, and calls one of the two.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from . import blobs, graph, native
from .dense import Metric, as_ids, as_matrix, check_metric
from .exact import top_k

log = logging.getLogger("astrai.retrieval.hnsw")

MAX_LEVEL = 30  # a draw above this has probability < M^-30: a guard, not a tuning knob


class HNSWIndex:
    """Approximate nearest neighbours over a layered proximity graph.

    - `M`: links per node on the upper layers (2 * M on layer 0); `ef_construction`: the
      candidate list while inserting; `ef_search`: the default candidate list while searching
      (a search uses max(ef, k)). Levels are drawn as floor(-ln(U) / ln(M)) from `seed`.
    - Neighbours are chosen with the paper's heuristic (Algorithm 4) on insert and when a
      neighbour list overflows; `keep_pruned=True` fills lists up with pruned candidates.
    - `delete(id)` marks the node (it still routes searches, is never a result or a new link);
      once more than `max_deleted_fraction` of the nodes are marked, `compact()` runs: every
      live node that linked to a deleted one gets its list re-selected from its live neighbours
      and its deleted neighbours' live neighbours, then the deleted nodes are removed.
    - Filtered search (`allowed`) walks the whole graph but returns only allowed ids; when the
      allowed set is small (<= `exact_filter_threshold` ids) it scores them exactly instead.
    - Inserts, searches and repairs run native code where a C++ compiler exists
      (`native=True`), else the Python twins in graph.py (one log line); both build the same
      graph. `use_native=True` demands native code (RuntimeError without it), False forbids it.
    Not thread-safe for writes: one writer, and no search while writing (VectorStore locks);
    concurrent searches are fine.
    """

    def __init__(self, dim: int, *, M: int = 16, ef_construction: int = 200, ef_search: int = 64,
                 metric: Metric = "cosine", seed: int = 0, max_deleted_fraction: float = 0.2,
                 exact_filter_threshold: int = 2000, keep_pruned: bool = False,
                 use_native: bool | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if M < 2:
            raise ValueError(f"M must be at least 2, got {M}")
        if ef_construction < 1 or ef_search < 1:
            raise ValueError("ef_construction and ef_search must be positive")
        if not 0 < max_deleted_fraction <= 1:
            raise ValueError(f"max_deleted_fraction must be in (0, 1], got {max_deleted_fraction}")
        self.dim = int(dim)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.metric = check_metric(metric)
        self.seed = seed
        self.max_deleted_fraction = float(max_deleted_fraction)
        self.exact_filter_threshold = int(exact_filter_threshold)
        self.keep_pruned = bool(keep_pruned)
        self._graph = graph.Graph(self.dim, self.M, graph.METRIC_CODES[self.metric])
        self._ids = np.zeros(0, dtype=np.int64)  # per slot
        self._slot_of: dict[int, int] = {}
        self._rng = np.random.default_rng(seed)
        self._native = None if use_native is False else native.load()
        if use_native and self._native is None:
            raise RuntimeError("native HNSW kernels requested but unavailable (see the astrai.retrieval.native log)")

    # --- size ---------------------------------------------------------------------------------

    @property
    def native(self) -> bool:
        return self._native is not None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, id: object) -> bool:
        return id in self._slot_of

    @property
    def num_deleted(self) -> int:
        """Marked nodes still in the graph (compaction drops them)."""
        return self._graph.num_deleted

    def nbytes(self) -> int:
        """Bytes held by the graph and its vectors (capacity included)."""
        g = self._graph
        arrays = (g.vectors, g.levels, g.upper, g.links0, g.count0, g.deleted, g.links_up, g.count_up, self._ids)
        return int(sum(a.nbytes for a in arrays))

    # --- native glue --------------------------------------------------------------------------

    def _struct(self) -> native.AstraiGraph:
        g = self._graph
        return native.AstraiGraph(
            g.vectors.ctypes.data, g.levels.ctypes.data, g.upper.ctypes.data, g.links0.ctypes.data,
            g.count0.ctypes.data, g.links_up.ctypes.data, g.count_up.ctypes.data, g.deleted.ctypes.data,
            g.dim, g.M, g.M0, g.metric_code, g.n, g.entry, g.max_level, g.num_deleted)

    def _scores(self, dists: np.ndarray) -> np.ndarray:
        return (-dists if self.metric == "l2" else np.float32(1) - dists).astype(np.float32)

    # --- writing ------------------------------------------------------------------------------

    def _draw_levels(self, n: int) -> np.ndarray:
        u = 1.0 - self._rng.random(n)  # (0, 1]
        return np.minimum(np.floor(-np.log(u) / math.log(self.M)), MAX_LEVEL).astype(np.int32)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under `ids`, in order; an id already present is deleted first."""
        matrix = as_matrix(vectors, self.dim, self.metric)
        id_array = as_ids(ids, len(matrix))
        if len(matrix) == 0:
            return
        for i in id_array.tolist():
            if i in self._slot_of:
                self.delete(i)
        g = self._graph
        n = len(matrix)
        levels = self._draw_levels(n)
        rows = int(levels.sum())
        first = g.n
        g.reserve(first + n, g.n_up + rows)
        if len(self._ids) < len(g.levels):
            grown = np.full(len(g.levels), -1, dtype=np.int64)
            grown[: len(self._ids)] = self._ids
            self._ids = grown
        g.vectors[first: first + n] = matrix
        g.levels[first: first + n] = levels
        offsets = g.n_up + np.concatenate(([0], np.cumsum(levels)[:-1]))
        g.upper[first: first + n] = np.where(levels > 0, offsets, -1)
        g.count0[first: first + n] = 0
        g.count_up[g.n_up: g.n_up + rows] = 0
        g.deleted[first: first + n] = 0
        self._ids[first: first + n] = id_array
        g.n += n
        g.n_up += rows
        if self._native is not None:
            struct = self._struct()
            self._native.insert(ctypes.byref(struct), first, n, self.ef_construction, int(self.keep_pruned))
            g.entry, g.max_level = struct.entry, struct.max_level
        else:
            for s in range(first, first + n):
                graph.insert(g, s, self.ef_construction, self.keep_pruned)
        for offset, i in enumerate(id_array.tolist()):
            self._slot_of[i] = first + offset

    def delete(self, id: int) -> bool:
        slot = self._slot_of.pop(id, None)
        if slot is None:
            return False
        g = self._graph
        g.deleted[slot] = 1
        g.num_deleted += 1
        if not self._slot_of:
            self._reset()
        elif g.num_deleted > self.max_deleted_fraction * g.n:
            self.compact()
        return True

    def _reset(self) -> None:
        self._graph = graph.Graph(self.dim, self.M, self._graph.metric_code)
        self._ids = np.zeros(0, dtype=np.int64)
        self._slot_of = {}

    def compact(self) -> None:
        """Repair the neighbour lists around deleted nodes, then drop them (slots renumbered)."""
        g = self._graph
        if g.num_deleted == 0:
            return
        if not self._slot_of:
            self._reset()
            return
        if self._native is not None:
            self._native.repair(ctypes.byref(self._struct()), int(self.keep_pruned))
        else:
            graph.repair(g, self.keep_pruned)
        live = np.flatnonzero(g.deleted[: g.n] == 0)
        new_slot = np.full(g.n, -1, dtype=np.int32)
        new_slot[live] = np.arange(len(live), dtype=np.int32)
        levels = g.levels[live]
        fresh = graph.Graph(self.dim, self.M, g.metric_code)
        fresh.reserve(len(live), int(levels.sum()))
        fresh.vectors[: len(live)] = g.vectors[live]
        fresh.levels[: len(live)] = levels
        fresh.count0[: len(live)] = g.count0[live]
        fresh.links0[: len(live)] = new_slot[g.links0[live]]
        up_rows = np.concatenate([np.arange(g.upper[s], g.upper[s] + g.levels[s]) for s in live if g.levels[s] > 0]
                                 or [np.zeros(0, dtype=np.int64)]).astype(np.int64)
        fresh.n_up = len(up_rows)
        fresh.links_up[: fresh.n_up] = new_slot[g.links_up[up_rows]]
        fresh.count_up[: fresh.n_up] = g.count_up[up_rows]
        offsets = np.concatenate(([0], np.cumsum(levels)[:-1])).astype(np.int32)
        fresh.upper[: len(live)] = np.where(levels > 0, offsets, -1)
        fresh.n = len(live)
        if g.deleted[g.entry]:
            top = int(np.argmax(levels))  # the first live node of the highest level
            fresh.entry, fresh.max_level = top, int(levels[top])
        else:
            fresh.entry, fresh.max_level = int(new_slot[g.entry]), g.max_level
        ids = self._ids[live]
        self._graph = fresh
        self._ids = np.full(len(fresh.levels), -1, dtype=np.int64)
        self._ids[: len(live)] = ids
        self._slot_of = {int(i): s for s, i in enumerate(ids.tolist())}

    # --- reading ------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int = 10, *, ef: int | None = None,
               allowed: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(query, self.dim, self.metric, "query")
        if len(q) != 1:
            raise ValueError("search takes one query vector; use search_batch for several")
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if k <= 0 or not self._slot_of:
            return empty
        mask = None
        if allowed is not None:
            slots = np.fromiter((self._slot_of[i] for i in allowed if i in self._slot_of), dtype=np.int64)
            if len(slots) == 0:
                return empty
            if len(slots) <= self.exact_filter_threshold:
                dists = self._graph.distances(q[0], slots)
                return top_k(self._scores(dists), self._ids[slots], k)
            mask = np.zeros(self._graph.n, dtype=np.uint8)
            mask[slots] = 1
        slots, dists = self._search(q, k, ef or self.ef_search, mask)
        keep = slots[0] >= 0
        return self._ids[slots[0][keep]], self._scores(dists[0][keep])

    def search_batch(self, queries: np.ndarray, k: int = 10, *,
                     ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim, self.metric, "queries")
        slots, dists = self._search(q, k, ef or self.ef_search, None)
        found = slots >= 0
        ids = np.full(slots.shape, -1, dtype=np.int64)
        ids[found] = self._ids[slots[found]]
        scores = np.where(found, self._scores(dists), -np.inf).astype(np.float32)
        return ids, scores

    def _search(self, q: np.ndarray, k: int, ef: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        nq = len(q)
        slots = np.full((nq, max(k, 0)), -1, dtype=np.int32)
        dists = np.full((nq, max(k, 0)), np.inf, dtype=np.float32)
        if k <= 0 or nq == 0 or not self._slot_of:
            return slots, dists
        if self._native is not None:
            q = np.ascontiguousarray(q, dtype=np.float32)
            self._native.search(ctypes.byref(self._struct()), q.ctypes.data, nq, k, ef,
                                None if mask is None else mask.ctypes.data, slots.ctypes.data, dists.ctypes.data)
            return slots, dists
        for row in range(nq):
            found = graph.search(self._graph, q[row], k, ef, mask)
            for col, (d, s) in enumerate(found):
                slots[row, col], dists[row, col] = s, d
        return slots, dists

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        g = self._graph
        live = np.flatnonzero(g.deleted[: g.n] == 0)
        return self._ids[live].copy(), g.vectors[live].copy()

    def vector(self, id: int) -> np.ndarray:
        """The stored vector of `id` (a copy); KeyError if absent."""
        return self._graph.vectors[self._slot_of[id]].copy()

    # --- persistence --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        g = self._graph
        header = {
            "dim": self.dim, "M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
            "metric": self.metric, "seed": self.seed, "max_deleted_fraction": self.max_deleted_fraction,
            "exact_filter_threshold": self.exact_filter_threshold, "keep_pruned": self.keep_pruned,
            "entry": g.entry, "max_level": g.max_level, "num_deleted": g.num_deleted,
            "rng": self._rng.bit_generator.state,
        }
        n, rows = g.n, g.n_up
        arrays = {"ids": self._ids[:n], "vectors": g.vectors[:n], "levels": g.levels[:n], "upper": g.upper[:n],
                  "links0": g.links0[:n], "count0": g.count0[:n], "deleted": g.deleted[:n],
                  "links_up": g.links_up[:rows], "count_up": g.count_up[:rows]}
        return blobs.pack("hnsw-index", header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, source: str = "hnsw index", *,
                   use_native: bool | None = None) -> HNSWIndex:
        h, a = blobs.unpack(data, "hnsw-index", source)
        index = cls(h["dim"], M=h["M"], ef_construction=h["ef_construction"], ef_search=h["ef_search"],
                    metric=h["metric"], seed=h["seed"], max_deleted_fraction=h["max_deleted_fraction"],
                    exact_filter_threshold=h["exact_filter_threshold"], keep_pruned=h["keep_pruned"],
                    use_native=use_native)
        index._rng.bit_generator.state = h["rng"]
        g = index._graph
        n, rows = len(a["ids"]), len(a["count_up"])
        g.reserve(n, rows)
        g.vectors[:n], g.levels[:n], g.upper[:n] = a["vectors"], a["levels"], a["upper"]
        g.links0[:n], g.count0[:n], g.deleted[:n] = a["links0"], a["count0"], a["deleted"]
        g.links_up[:rows], g.count_up[:rows] = a["links_up"], a["count_up"]
        g.n, g.n_up = n, rows
        g.entry, g.max_level, g.num_deleted = h["entry"], h["max_level"], h["num_deleted"]
        index._ids = np.full(len(g.levels), -1, dtype=np.int64)
        index._ids[:n] = a["ids"]
        index._slot_of = {int(i): s for s, i in enumerate(a["ids"].tolist()) if not a["deleted"][s]}
        return index

    def save(self, path: str | Path) -> None:
        blobs.atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, *, use_native: bool | None = None) -> HNSWIndex:
        return cls.from_bytes(Path(path).read_bytes(), str(path), use_native=use_native)
