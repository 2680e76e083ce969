"""The HNSW graph's arrays and its algorithms in Python: the reference the native code follows.

Layout (shared with csrc/hnsw.cpp, which reads and writes the same numpy buffers):
- `vectors [cap, dim]` float32 (unit length for cosine), `levels [cap]` int32;
- layer 0: `links0 [cap, M0]` int32 with `count0 [cap]` (M0 = 2 * M);
- upper layers: node s with level L > 0 owns rows `upper[s] .. upper[s] + L - 1` of
  `links_up [rows, M]` / `count_up [rows]` (row `upper[s] + layer - 1`); `upper[s] = -1` if L = 0;
- `deleted [cap]` uint8: marked nodes still route searches but are never results or new links.
Distances: 1 - dot for "cosine" / "ip", squared L2 for "l2"; lower is closer. Every ordering
is by (distance, slot), so ties break the same way here and in C++, and the two build the same
graph when distances are exact (e.g. small-integer vectors).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

METRIC_CODES = {"cosine": 0, "ip": 0, "l2": 1}


class Graph:
    """The arrays of one HNSW graph plus its entry point; grows by doubling."""

    def __init__(self, dim: int, M: int, metric_code: int) -> None:
        self.dim = dim
        self.M = M
        self.M0 = 2 * M
        self.metric_code = metric_code
        self.n = 0          # slots in use (deleted included)
        self.n_up = 0       # upper-layer rows in use
        self.entry = -1
        self.max_level = -1
        self.num_deleted = 0
        self._allocate(0, 0)

    def _allocate(self, cap: int, up_cap: int) -> None:
        self.vectors = np.zeros((cap, self.dim), dtype=np.float32)
        self.levels = np.zeros(cap, dtype=np.int32)
        self.upper = np.full(cap, -1, dtype=np.int32)
        self.links0 = np.zeros((cap, self.M0), dtype=np.int32)
        self.count0 = np.zeros(cap, dtype=np.int32)
        self.deleted = np.zeros(cap, dtype=np.uint8)
        self.links_up = np.zeros((up_cap, self.M), dtype=np.int32)
        self.count_up = np.zeros(up_cap, dtype=np.int32)

    def reserve(self, cap: int, up_cap: int) -> None:
        """Make room for `cap` slots and `up_cap` upper rows (copies; old buffers stay valid
        for whoever still holds them)."""
        if cap > len(self.levels):
            cap = max(cap, 2 * len(self.levels), 256)
            old = (self.vectors, self.levels, self.upper, self.links0, self.count0, self.deleted)
            self.vectors = np.zeros((cap, self.dim), dtype=np.float32)
            self.levels = np.zeros(cap, dtype=np.int32)
            self.upper = np.full(cap, -1, dtype=np.int32)
            self.links0 = np.zeros((cap, self.M0), dtype=np.int32)
            self.count0 = np.zeros(cap, dtype=np.int32)
            self.deleted = np.zeros(cap, dtype=np.uint8)
            for new, prev in zip((self.vectors, self.levels, self.upper, self.links0, self.count0, self.deleted),
                                 old, strict=True):
                new[: self.n] = prev[: self.n]
        if up_cap > len(self.count_up):
            up_cap = max(up_cap, 2 * len(self.count_up), 64)
            links, counts = self.links_up, self.count_up
            self.links_up = np.zeros((up_cap, self.M), dtype=np.int32)
            self.count_up = np.zeros(up_cap, dtype=np.int32)
            self.links_up[: self.n_up] = links[: self.n_up]
            self.count_up[: self.n_up] = counts[: self.n_up]

    # --- links ----------------------------------------------------------------------------

    def links(self, s: int, layer: int) -> np.ndarray:
        if layer == 0:
            return self.links0[s, : self.count0[s]]
        row = self.upper[s] + layer - 1
        return self.links_up[row, : self.count_up[row]]

    def set_links(self, s: int, layer: int, neighbours: list[int]) -> None:
        if layer == 0:
            self.links0[s, : len(neighbours)] = neighbours
            self.count0[s] = len(neighbours)
        else:
            row = self.upper[s] + layer - 1
            self.links_up[row, : len(neighbours)] = neighbours
            self.count_up[row] = len(neighbours)

    def max_links(self, layer: int) -> int:
        return self.M0 if layer == 0 else self.M

    # --- distances ----------------------------------------------------------------------------

    def distances(self, q: np.ndarray, slots: np.ndarray | list[int]) -> np.ndarray:
        v = self.vectors[slots]
        if self.metric_code == 1:
            diff = v - q
            return np.einsum("ij,ij->i", diff, diff)
        return np.float32(1) - v @ q


def search_layer(g: Graph, q: np.ndarray, entry: list[tuple[float, int]], ef: int, layer: int,
                 filtered: bool, allowed: np.ndarray | None = None) -> list[tuple[float, int]]:
    """The paper's SEARCH-LAYER: the `ef` closest eligible nodes found from `entry`, ascending.
    With `filtered`, only live nodes (and, given `allowed`, allowed ones) are results, all nodes
    still route, and the search stops only once the result list is full."""
    visited = {s for _, s in entry}
    candidates = list(entry)
    heapq.heapify(candidates)
    results: list[tuple[float, int]] = []  # max-heap of (-d, -s)

    def eligible(s: int) -> bool:
        return not filtered or (not g.deleted[s] and (allowed is None or bool(allowed[s])))

    for d, s in entry:
        if eligible(s):
            heapq.heappush(results, (-d, -s))
            if len(results) > ef:
                heapq.heappop(results)
    bound = -results[0][0] if results else math.inf
    while candidates:
        d, s = candidates[0]
        if d > bound and (len(results) >= ef or not filtered):
            break
        heapq.heappop(candidates)
        fresh = [int(e) for e in g.links(s, layer) if int(e) not in visited]
        if not fresh:
            continue
        visited.update(fresh)
        for e, de in zip(fresh, g.distances(q, fresh).tolist(), strict=True):
            if len(results) < ef or de < bound:
                heapq.heappush(candidates, (de, e))
                if eligible(e):
                    heapq.heappush(results, (-de, -e))
                    if len(results) > ef:
                        heapq.heappop(results)
                if results:
                    bound = -results[0][0]
    return sorted((-nd, -ns) for nd, ns in results)


def select_neighbours(g: Graph, candidates: list[tuple[float, int]], m: int, keep_pruned: bool) -> list[int]:
    """Algorithm 4 (the heuristic) over candidates sorted by (distance to the base, slot): take a
    candidate only if it is closer to the base than to every one already taken. Up to `m`
    candidates are all kept (hnswlib's shortcut); `keep_pruned` fills up with rejected ones."""
    if len(candidates) <= m:
        return [s for _, s in candidates]
    chosen: list[int] = []
    pruned: list[int] = []
    for d, s in candidates:
        if len(chosen) >= m:
            break
        if chosen and (g.distances(g.vectors[s], chosen) < d).any():
            pruned.append(s)
        else:
            chosen.append(s)
    if keep_pruned:
        chosen += pruned[: m - len(chosen)]
    return chosen


def _connect(g: Graph, e: int, new: int, layer: int, keep_pruned: bool) -> None:
    """Add the back link e -> new, shrinking e's list with the heuristic when it overflows."""
    links = g.links(e, layer)
    cap = g.max_links(layer)
    if len(links) < cap:
        g.set_links(e, layer, [*links.tolist(), new])
        return
    slots = [*links.tolist(), new]
    dists = g.distances(g.vectors[e], slots).tolist()
    g.set_links(e, layer, select_neighbours(g, sorted(zip(dists, slots, strict=True)), cap, keep_pruned))


def insert(g: Graph, s: int, ef_construction: int, keep_pruned: bool) -> None:
    """Algorithm 1: link slot `s` (vector, level and upper rows already in place) into the graph."""
    level = int(g.levels[s])
    if g.entry < 0:
        g.entry, g.max_level = s, level
        return
    q = g.vectors[s]
    entry = [(float(g.distances(q, [g.entry])[0]), g.entry)]
    for layer in range(g.max_level, level, -1):
        entry = search_layer(g, q, entry, 1, layer, filtered=False)[:1]
    filtered = g.num_deleted > 0
    for layer in range(min(level, g.max_level), -1, -1):
        found = search_layer(g, q, entry, ef_construction, layer, filtered)
        neighbours = select_neighbours(g, found, g.M, keep_pruned)
        g.set_links(s, layer, neighbours)
        for e in neighbours:
            _connect(g, e, s, layer, keep_pruned)
        if found:
            entry = found
    if level > g.max_level:
        g.entry, g.max_level = s, level


def search(g: Graph, q: np.ndarray, k: int, ef: int, allowed: np.ndarray | None) -> list[tuple[float, int]]:
    """The k closest live (and allowed) slots, ascending (distance, slot)."""
    if g.entry < 0:
        return []
    entry = [(float(g.distances(q, [g.entry])[0]), g.entry)]
    for layer in range(g.max_level, 0, -1):
        entry = search_layer(g, q, entry, 1, layer, filtered=False)[:1]
    filtered = g.num_deleted > 0 or allowed is not None
    return search_layer(g, q, entry, max(ef, k), 0, filtered, allowed)[:k]


def repair(g: Graph, keep_pruned: bool) -> None:
    """Before deleted nodes are dropped: each live node that links to a deleted one gets its list
    re-selected (heuristic) from its live neighbours plus the deleted neighbours' live neighbours."""
    for u in range(g.n):
        if g.deleted[u]:
            continue
        for layer in range(int(g.levels[u]) + 1):
            links = g.links(u, layer).tolist()
            dead = [x for x in links if g.deleted[x]]
            if not dead:
                continue
            pool = {x for x in links if not g.deleted[x]}
            for x in dead:
                pool.update(int(y) for y in g.links(x, layer) if not g.deleted[y] and y != u)
            slots = sorted(pool)
            dists = g.distances(g.vectors[u], slots).tolist() if slots else []
            g.set_links(u, layer, select_neighbours(g, sorted(zip(dists, slots, strict=True)),
                                                     g.max_links(layer), keep_pruned))
