"""BM25: the same numbers as bm25s' Lucene variant for the same tokens, and an index built by
any sequence of adds and deletes scores exactly like a fresh build of what remains."""

from __future__ import annotations

import math

import bm25s
import numpy as np
import pytest
from astrai.retrieval import Analyzer, BM25Index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ANALYZER = Analyzer()


def make_queries(corpus: list[list[str]], n: int, seed: int = 0) -> list[list[str]]:
    """Queries of 1-6 words drawn from random documents (some repeated, some rare)."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        doc = corpus[rng.integers(len(corpus))]
        size = int(rng.integers(1, 7))
        queries.append([doc[i] for i in rng.integers(0, len(doc), size)])
    return queries


@pytest.fixture(scope="module")
def corpus(docs) -> list[list[str]]:
    return [ANALYZER.tokens(d) for d in docs]


@pytest.fixture(scope="module")
def both(corpus):
    ours = BM25Index(k1=1.2, b=0.75)
    for i, tokens in enumerate(corpus):
        ours.add(i, tokens)
    theirs = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    theirs.index(corpus, show_progress=False)
    return ours, theirs


def test_scores_equal_bm25s_lucene(both, corpus):
    ours, theirs = both
    queries = make_queries(corpus, 300)
    same_top10 = 0
    worst = 0.0
    for q in queries:
        ids, scores = ours.scores(q)
        reference = theirs.get_scores([t for t in q if t in theirs.vocab_dict]).astype(np.float64)
        # every document bm25s scores above zero is one we return, with the same score
        assert set(ids.tolist()) == set(np.flatnonzero(reference > 0).tolist())
        rel = np.abs(scores - reference[ids]) / reference[ids]
        worst = max(worst, float(rel.max()))
        top = [d for d, _ in ours.search(q, 10)]
        ref_top = sorted(np.flatnonzero(reference > 0).tolist(), key=lambda d: (-reference[d], d))[:10]
        same_top10 += top == ref_top
    assert worst <= 1e-5, worst
    assert same_top10 >= 0.99 * len(queries), same_top10


def test_formula_by_hand():
    index = BM25Index(k1=1.5, b=0.5)
    index.add(7, ["a", "b", "a"])
    index.add(9, ["b", "c"])
    n, avgdl = 2, 2.5
    idf_a = math.log(1 + (n - 1 + 0.5) / (1 + 0.5))
    idf_b = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))
    norm7 = 1.5 * (1 - 0.5 + 0.5 * 3 / avgdl)
    expected = idf_a * 2 / (2 + norm7) + idf_b * 1 / (1 + norm7)
    assert index.score(["a", "b"], 7) == pytest.approx(expected, rel=1e-12)
    # repeated query tokens count again (Lucene's BooleanQuery of two identical clauses)
    assert index.score(["a", "a"], 7) == pytest.approx(2 * idf_a * 2 / (2 + norm7), rel=1e-12)
    assert dict(index.search(["a", "b"], 5))[7] == pytest.approx(expected, rel=1e-6)


def test_search_edges():
    index = BM25Index()
    index.add(1, ["x", "y"])
    index.add(2, ["y", "z"])
    index.add(3, ["z"])
    assert index.search(["nothing"], 5) == []
    assert index.search([], 5) == []
    assert [d for d, _ in index.search(["y", "z"], 5, allowed={2, 3})] == [2, 3]
    assert index.search(["y"], 0) == []
    index.add(2, ["x"])  # replace
    assert index.df("y") == 1 and index.df("x") == 2 and len(index) == 3
    assert index.delete(2) and not index.delete(2)
    with pytest.raises(KeyError):
        index.score(["x"], 2)
    with pytest.raises(ValueError):
        index.add(-1, ["x"])


def test_ties_break_by_smaller_id():
    index = BM25Index()
    for doc in (5, 3, 9, 1):
        index.add(doc, ["same", "words"])
    assert [d for d, _ in index.search(["same"], 3)] == [1, 3, 5]


def fresh(docs: dict[int, list[str]]) -> BM25Index:
    index = BM25Index()
    for doc, tokens in sorted(docs.items()):
        index.add(doc, tokens)
    return index


WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 30), st.lists(WORDS, min_size=0, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 30), st.just([])),
), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, query=st.lists(WORDS, min_size=1, max_size=4), fraction=st.sampled_from([0.05, 0.5, 1.0]))
def test_incremental_equals_fresh_build(ops, query, fraction):
    index = BM25Index(max_deleted_fraction=fraction)
    live: dict[int, list[str]] = {}
    for op, doc, tokens in ops:
        if op == "add":
            index.add(doc, tokens)
            live[doc] = tokens
        else:
            assert index.delete(doc) == (doc in live)
            live.pop(doc, None)
    reference = fresh(live)
    assert len(index) == len(reference) and index.avgdl == pytest.approx(reference.avgdl)
    got = dict(index.search(query, 100))
    want = dict(reference.search(query, 100))
    assert got.keys() == want.keys()
    for doc in want:
        assert got[doc] == pytest.approx(want[doc], rel=1e-5)
        assert index.score(query, doc) == pytest.approx(reference.score(query, doc), rel=1e-12)
