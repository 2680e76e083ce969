"""Brute-force search: the recall reference, and the index for small collections."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from . import blobs
from .dense import Metric, as_ids, as_matrix, check_metric


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, scores), best first, ties by the smaller id."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


class ExactIndex:
    """Every stored vector scored against the query (one matrix-vector product)."""

    def __init__(self, dim: int, metric: Metric = "cosine") -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._sq_norms = np.zeros(0, dtype=np.float32)  # for l2
        self._n = 0
        self._slot_of: dict[int, int] = {}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, id: object) -> bool:
        return id in self._slot_of

    def _grow(self, need: int) -> None:
        if need <= len(self._ids):
            return
        cap = max(need, 2 * len(self._ids), 64)
        vectors = np.zeros((cap, self.dim), dtype=np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        ids = np.full(cap, -1, dtype=np.int64)
        ids[: self._n] = self._ids[: self._n]
        norms = np.zeros(cap, dtype=np.float32)
        norms[: self._n] = self._sq_norms[: self._n]
        self._vectors, self._ids, self._sq_norms = vectors, ids, norms

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        matrix = as_matrix(vectors, self.dim, self.metric)
        id_array = as_ids(ids, len(matrix))
        for i in id_array:
            self.delete(int(i))
        self._grow(self._n + len(matrix))
        end = self._n + len(matrix)
        self._vectors[self._n: end] = matrix
        self._ids[self._n: end] = id_array
        self._sq_norms[self._n: end] = np.einsum("ij,ij->i", matrix, matrix)
        for offset, i in enumerate(id_array.tolist()):
            self._slot_of[i] = self._n + offset
        self._n = end

    def delete(self, id: int) -> bool:
        slot = self._slot_of.pop(id, None)
        if slot is None:
            return False
        last = self._n - 1
        if slot != last:  # move the last row into the hole
            self._vectors[slot] = self._vectors[last]
            self._ids[slot] = self._ids[last]
            self._sq_norms[slot] = self._sq_norms[last]
            self._slot_of[int(self._ids[slot])] = slot
        self._ids[last] = -1
        self._n = last
        return True

    def _scores(self, queries: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        vectors = self._vectors[rows]
        dots = queries @ vectors.T
        if self.metric == "l2":
            q_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
            return -(q_norms - 2 * dots + self._sq_norms[rows][None, :])
        return dots

    def search(self, query: np.ndarray, k: int = 10, *, ef: int | None = None,
               allowed: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(query, self.dim, self.metric, "query")
        if len(q) != 1:
            raise ValueError("search takes one query vector; use search_batch for several")
        if k <= 0 or self._n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if allowed is None:
            rows: np.ndarray | slice = slice(0, self._n)
        else:
            rows = np.array(sorted(self._slot_of[i] for i in allowed if i in self._slot_of), dtype=np.int64)
            if len(rows) == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._scores(q, rows)[0].astype(np.float32)
        return top_k(scores, self._ids[rows], k)

    def search_batch(self, queries: np.ndarray, k: int = 10, *,
                     ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim, self.metric, "queries")
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if self._n == 0 or k <= 0:
            return out_ids, out_scores
        ids = self._ids[: self._n]
        for start in range(0, len(q), 256):  # bound the [queries, n] score matrix
            scores = self._scores(q[start: start + 256], slice(0, self._n)).astype(np.float32)
            for row, s in enumerate(scores):
                top_ids, top_scores = top_k(s, ids, k)
                out_ids[start + row, : len(top_ids)] = top_ids
                out_scores[start + row, : len(top_ids)] = top_scores
        return out_ids, out_scores

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ids[: self._n].copy(), self._vectors[: self._n].copy()

    def vector(self, id: int) -> np.ndarray:
        """The stored vector of `id` (a copy); KeyError if absent."""
        return self._vectors[self._slot_of[id]].copy()

    def to_bytes(self) -> bytes:
        return blobs.pack("exact-index", {"dim": self.dim, "metric": self.metric},
                          {"ids": self._ids[: self._n], "vectors": self._vectors[: self._n]})

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, source: str = "exact index") -> ExactIndex:
        header, arrays = blobs.unpack(data, "exact-index", source)
        index = cls(header["dim"], header["metric"])
        n = len(arrays["ids"])
        index._grow(n)
        index._vectors[:n] = arrays["vectors"]
        index._ids[:n] = arrays["ids"]
        index._sq_norms[:n] = np.einsum("ij,ij->i", arrays["vectors"], arrays["vectors"])
        index._slot_of = {int(i): s for s, i in enumerate(arrays["ids"].tolist())}
        index._n = n
        return index

    def save(self, path: str | Path) -> None:
        blobs.atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> ExactIndex:
        return cls.from_bytes(Path(path).read_bytes(), str(path))
