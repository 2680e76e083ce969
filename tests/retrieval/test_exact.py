"""Exact search against a direct numpy computation, for every metric."""

from __future__ import annotations

import numpy as np
import pytest
from astrai.retrieval import ExactIndex, RetrievalInputError, StoreCorruptError

from .conftest import clustered


def reference(vectors: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return v @ (query / np.linalg.norm(query))
    if metric == "ip":
        return vectors @ query
    return -((vectors - query) ** 2).sum(axis=1)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scores_and_order_match_numpy(metric):
    x, q = clustered(500, 16, queries=20, seed=1)
    index = ExactIndex(16, metric)
    ids = np.arange(1000, 1500)
    index.add(ids, x)
    for query in q:
        want = reference(x.astype(np.float64), query.astype(np.float64), metric)
        order = np.argsort(-want, kind="stable")[:10]
        got_ids, got_scores = index.search(query, 10)
        assert got_ids.tolist() == (ids[order]).tolist()
        np.testing.assert_allclose(got_scores, want[order], rtol=1e-4, atol=1e-4)
    batch_ids, _ = index.search_batch(q, 10)
    assert [row.tolist() for row in batch_ids] == [index.search(query, 10)[0].tolist() for query in q]


def test_delete_replace_allowed_and_round_trip():
    x = clustered(100, 8, seed=3)
    index = ExactIndex(8, "l2")
    index.add(range(100), x)
    assert index.delete(5) and not index.delete(5) and 5 not in index and len(index) == 99
    ids, _ = index.search(x[5], 100)
    assert 5 not in ids.tolist() and len(ids) == 99
    index.add([7], x[5:6])  # replace id 7's vector
    assert index.search(x[5], 1)[0].tolist() == [7]
    assert set(index.search(x[0], 10, allowed={1, 2, 3, 999})[0].tolist()) == {1, 2, 3}
    assert len(index.search(x[0], 10, allowed=set())[0]) == 0
    copy = ExactIndex.from_bytes(index.to_bytes())
    assert copy.search(x[9], 10)[0].tolist() == index.search(x[9], 10)[0].tolist()
    damaged = bytearray(index.to_bytes())
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises(StoreCorruptError):
        ExactIndex.from_bytes(bytes(damaged))


def test_bad_vectors_are_clear_errors():
    index = ExactIndex(4, "cosine")
    with pytest.raises(RetrievalInputError, match="dimension 4"):
        index.add([1], np.ones((1, 5)))
    with pytest.raises(RetrievalInputError, match="NaN"):
        index.add([1], np.array([[1, np.nan, 0, 0]]))
    with pytest.raises(RetrievalInputError, match="zero vector"):
        index.add([1], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="repeat"):
        index.add([1, 1], np.ones((2, 4)))
