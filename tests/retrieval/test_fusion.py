"""Fusion formulas by hand, option validation, and the score ranges `fuse` promises."""

from __future__ import annotations

import pytest
from astrai.retrieval import RankingOptions, RetrievalInputError, convex, fuse, normalise, rrf


def test_rrf_by_hand():
    fused = dict(rrf([[1, 2, 3], [3, 1]], [2.0, 1.0], k=10))
    assert fused[1] == pytest.approx(2 / 11 + 1 / 12)
    assert fused[2] == pytest.approx(2 / 12)
    assert fused[3] == pytest.approx(2 / 13 + 1 / 11)
    assert [d for d, _ in rrf([[5, 4], [4, 5]])] == [4, 5]  # equal scores: smaller id first


def test_convex_by_hand():
    dense = [(1, 0.9), (2, 0.5), (3, 0.1)]
    sparse = [(3, 12.0), (4, 2.0)]
    fused = dict(convex([dense, sparse], [3.0, 1.0]))
    assert fused[1] == pytest.approx(0.75 * 1.0)
    assert fused[2] == pytest.approx(0.75 * 0.5)
    assert fused[3] == pytest.approx(0.75 * 0.0 + 0.25 * 1.0)
    assert fused[4] == pytest.approx(0.0)
    assert normalise([2.0, 4.0], "max") == [0.5, 1.0]
    assert normalise([3.0, 3.0]) == [1.0, 1.0]
    assert normalise([1.0, -1.0], "none") == [1.0, -1.0]


@pytest.mark.parametrize("kwargs,param", [
    ({"mode": "bogus"}, "ranking_options.mode"),
    ({"dense_weight": -1}, "ranking_options.dense_weight"),
    ({"sparse_weight": float("nan")}, "ranking_options.sparse_weight"),
    ({"dense_weight": 0, "sparse_weight": 0}, "ranking_options"),
    ({"rrf_k": 0}, "ranking_options.rrf_k"),
    ({"normalisation": "zscore"}, "ranking_options.normalisation"),
    ({"score_threshold": "high"}, "ranking_options.score_threshold"),
    ({"candidates": 0}, "ranking_options.candidates"),
    ({"dense_weight": True}, "ranking_options.dense_weight"),
])
def test_bad_options_name_the_field(kwargs, param):
    with pytest.raises(RetrievalInputError) as info:
        RankingOptions(**kwargs)
    assert info.value.param == param


DENSE = [(1, 0.91), (2, 0.80), (3, 0.42), (5, 0.30)]
SPARSE = [(3, 9.5), (1, 7.0), (4, 1.2)]


def test_fuse_modes_and_ranks():
    assert RankingOptions().mode == "hybrid_convex" and RankingOptions().dense_weight == 2.0
    hits = fuse(DENSE, SPARSE, RankingOptions(mode="hybrid_rrf"), k=10)
    assert hits[0].id == 1 and hits[0].dense_rank == 1 and hits[0].sparse_rank == 2
    assert all(0 < h.score <= 1 for h in hits)
    for mode in ("hybrid_rrf", "hybrid_convex"):
        top = fuse([(7, 0.5)], [(7, 3.0)], RankingOptions(mode=mode, dense_weight=0.3, sparse_weight=2.0), k=1)[0]
        assert top.score == pytest.approx(1.0)  # first in both lists
    convex_hits = fuse(DENSE, SPARSE, RankingOptions(mode="hybrid_convex"), k=10)
    assert all(0 <= h.score <= 1 for h in convex_hits)
    assert [h.id for h in fuse(DENSE, SPARSE, RankingOptions(mode="dense"), k=2)] == [1, 2]
    sparse_only = fuse(DENSE, SPARSE, RankingOptions(mode="sparse"), k=10)
    assert [(h.id, h.score) for h in sparse_only] == SPARSE and sparse_only[0].dense_rank == 3
    assert [h.id for h in fuse(DENSE, SPARSE, RankingOptions(mode="dense", score_threshold=0.5), k=10)] == [1, 2]


def test_weights_move_the_order():
    dense_heavy = fuse(DENSE, SPARSE, RankingOptions(dense_weight=10, sparse_weight=1), k=3)
    sparse_heavy = fuse(DENSE, SPARSE, RankingOptions(dense_weight=1, sparse_weight=10), k=3)
    assert dense_heavy[0].id == 1 and sparse_heavy[0].id == 3
    assert RankingOptions(dense_weight=0).uses_dense is False and RankingOptions(mode="dense").uses_sparse is False
