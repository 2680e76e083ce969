"""What every dense (vector) index offers, and the metric conventions they share.

Scores are "higher is better" everywhere: cosine similarity ("cosine": vectors and queries are
scaled to unit length, so it equals their inner product), inner product ("ip"), or the negative
squared Euclidean distance ("l2"). Ids are non-negative integers chosen by the caller.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .errors import RetrievalInputError

Metric = Literal["cosine", "ip", "l2"]
METRICS: tuple[str, ...] = ("cosine", "ip", "l2")


def check_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric  # type: ignore[return-value]


def as_matrix(vectors: np.ndarray | Sequence[Sequence[float]], dim: int, metric: Metric,
              what: str = "vectors") -> np.ndarray:
    """float32 [n, dim], C-contiguous, unit length for "cosine"; checked (finite, right width,
    non-zero for cosine). A single vector becomes one row."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise RetrievalInputError(f"{what} must have dimension {dim}, got shape {tuple(array.shape)}", what)
    if not np.isfinite(array).all():
        raise RetrievalInputError(f"{what} contain NaN or infinite values", what)
    array = np.ascontiguousarray(array)
    if metric == "cosine" and len(array):
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if (norms == 0).any():
            raise RetrievalInputError(f"{what}: a zero vector has no cosine similarity", what)
        array = array / norms
    return array


def as_ids(ids: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"{len(array)} ids for {n} vectors")
    if len(array) and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError("ids must be non-negative integers")
    if len(np.unique(array)) != len(array):
        raise ValueError("ids repeat within one add() call")
    return array.astype(np.int64)


@runtime_checkable
class DenseIndex(Protocol):
    """A vector index: `ExactIndex` (brute force) and `HNSWIndex` (approximate) implement it."""

    dim: int
    metric: Metric

    def __len__(self) -> int: ...

    def __contains__(self, id: object) -> bool: ...

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under `ids`; an id already present is replaced."""

    def delete(self, id: int) -> bool:
        """Remove one id; False if absent. A deleted id is never returned again."""

    def search(self, query: np.ndarray, k: int = 10, *, ef: int | None = None,
               allowed: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [<=k], scores float32 [<=k]) best first; only ids in `allowed` if given.
        `ef` is HNSW's search breadth (ignored by exact search)."""

    def search_batch(self, queries: np.ndarray, k: int = 10, *,
                     ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """([nq, k] ids, [nq, k] scores), rows best first, padded with -1 / -inf."""

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n], vectors [n, dim]) as stored (unit length for cosine), in no set order."""

    def vector(self, id: int) -> np.ndarray:
        """The stored vector of `id` (unit length for cosine); KeyError if absent."""

    def to_bytes(self) -> bytes:
        """A self-checking serialisation (`from_bytes` of the same class restores it)."""
