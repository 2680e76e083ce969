"""HNSW: recall against exact search, deletes and compaction, filtered search, persistence,
and the native kernels building exactly the graph the Python reference builds."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from astrai.retrieval import ExactIndex, HNSWIndex, StoreCorruptError
from astrai.retrieval import native as native_module

from .conftest import clustered, recall

NATIVE = native_module.load() is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="no C++ compiler here: the native HNSW kernels cannot build")


@pytest.fixture(scope="module")
def data():
    x, q = clustered(5000, 64, queries=200, seed=0)
    exact = ExactIndex(64)
    exact.add(np.arange(5000), x)
    truth, _ = exact.search_batch(q, 10)
    return x, q, truth


@pytest.fixture(scope="module")
def built(data):
    x, _, _ = data
    index = HNSWIndex(64, M=16, ef_construction=100, seed=0)
    index.add(np.arange(5000), x)
    return index


def test_recall_at_10(built, data):
    _, q, truth = data
    found, scores = built.search_batch(q, 10, ef=64)
    assert recall(found, truth) >= 0.95
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    single = np.stack([built.search(query, 10, ef=64)[0] for query in q[:20]])
    assert np.array_equal(single, found[:20])


def test_graph_invariants(built):
    g = built._graph
    for s in range(g.n):
        for layer in range(int(g.levels[s]) + 1):
            links = g.links(s, layer)
            assert len(links) <= g.max_links(layer)
            assert s not in links.tolist() and len(set(links.tolist())) == len(links)
            assert all(int(g.levels[e]) >= layer for e in links)
    assert g.levels[g.entry] == g.max_level == g.levels[: g.n].max()


def test_delete_never_returns_deleted_and_compaction_keeps_recall(data):
    x, q, _ = data
    index = HNSWIndex(64, M=16, ef_construction=100, seed=0, max_deleted_fraction=0.3)
    index.add(np.arange(5000), x)
    gone = set(range(0, 5000, 3)) | set(range(1, 800))
    for i in sorted(gone)[:1000]:  # below the compaction threshold: marked only
        index.delete(i)
    assert index.num_deleted == 1000
    found, _ = index.search_batch(q, 10, ef=64)
    assert not set(found.ravel().tolist()) & set(sorted(gone)[:1000])
    for i in sorted(gone)[1000:]:
        index.delete(i)
    assert index.num_deleted < 0.3 * len(index) + 1  # compaction ran and dropped them
    keep = np.array(sorted(set(range(5000)) - gone))
    exact = ExactIndex(64)
    exact.add(keep, x[keep])
    truth, _ = exact.search_batch(q, 10)
    found, _ = index.search_batch(q, 10, ef=64)
    assert not set(found.ravel().tolist()) & gone
    assert recall(found, truth) >= 0.95
    index.compact()
    assert index.num_deleted == 0 and len(index) == len(keep)
    found, _ = index.search_batch(q, 10, ef=64)
    assert recall(found, truth) >= 0.95
    g = index._graph
    assert all(0 <= e < g.n for s in range(g.n) for e in g.links(s, 0).tolist())
    assert not g.deleted[: g.n].any()


def test_filtered_search_graph_and_exact_paths(built, data):
    x, q, _ = data
    for allowed, threshold in ((set(range(0, 5000, 2)), 100), (set(range(0, 5000, 40)), 2000)):
        built.exact_filter_threshold = threshold
        ids = np.array(sorted(allowed))
        exact = ExactIndex(64)
        exact.add(ids, x[ids])
        truth, _ = exact.search_batch(q[:50], 10)
        found = np.stack([np.pad(built.search(query, 10, ef=64, allowed=allowed)[0], (0, 10), constant_values=-1)[:10]
                          for query in q[:50]])
        assert set(found.ravel().tolist()) - {-1} <= allowed
        assert recall(found, truth) >= 0.95
    built.exact_filter_threshold = 2000


def test_replace_and_empty(data):
    x, _, _ = data
    index = HNSWIndex(64, M=8, ef_construction=40)
    assert len(index.search(x[0], 5)[0]) == 0
    index.add(np.arange(200), x[:200])
    index.add([3], x[500:501])
    assert index.search(x[500], 1)[0].tolist() == [3] and len(index) == 200
    for i in range(200):
        index.delete(i)
    assert len(index) == 0 and len(index.search(x[0], 5)[0]) == 0
    index.add([1], x[:1])
    assert index.search(x[0], 5)[0].tolist() == [1]


def test_save_load_round_trip(built, data, tmp_path):
    _, q, _ = data
    path = tmp_path / "graph.bin"
    built.save(path)
    loaded = HNSWIndex.load(path)
    assert np.array_equal(loaded.search_batch(q, 10)[0], built.search_batch(q, 10)[0])
    loaded.add([99999], q[:1])  # the level generator resumes where it was
    assert loaded.search(q[0], 1)[0].tolist() == [99999]
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    with pytest.raises(StoreCorruptError):
        HNSWIndex.from_bytes(bytes(damaged))


@needs_native
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_native_builds_the_python_graph(metric):
    """Small-integer vectors make every distance exact in float32, so the two must agree link
    for link: after inserts, after deletes and compaction, and in what searches return."""
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, size=(500, 16)).astype(np.float32)
    q = rng.integers(-8, 9, size=(30, 16)).astype(np.float32)
    a = HNSWIndex(16, M=6, ef_construction=32, metric=metric, use_native=True)
    b = HNSWIndex(16, M=6, ef_construction=32, metric=metric, use_native=False)
    assert a.native and not b.native

    def same_graph() -> bool:
        ga, gb = a._graph, b._graph
        if (ga.n, ga.n_up, ga.entry, ga.max_level) != (gb.n, gb.n_up, gb.entry, gb.max_level):
            return False
        return (all(np.array_equal(ga.links(s, 0), gb.links(s, 0)) for s in range(ga.n))
                and np.array_equal(ga.count_up[: ga.n_up], gb.count_up[: gb.n_up])
                and all(np.array_equal(ga.links(s, layer), gb.links(s, layer))
                        for s in range(ga.n) for layer in range(1, int(ga.levels[s]) + 1)))

    for index in (a, b):
        index.add(np.arange(300), x[:300])
    assert same_graph()
    for index in (a, b):
        for i in range(0, 300, 4):
            index.delete(i)
        index.add(np.arange(300, 500), x[300:])  # inserts while nodes are marked
    assert same_graph()
    for index in (a, b):
        index.compact()
    assert same_graph()
    for allowed in (None, set(range(0, 500, 3))):
        b.exact_filter_threshold = a.exact_filter_threshold = 10
        ra = [a.search(query, 10, ef=20, allowed=allowed) for query in q]
        rb = [b.search(query, 10, ef=20, allowed=allowed) for query in q]
        for (ia, sa), (ib, sb) in zip(ra, rb, strict=True):
            assert ia.tolist() == ib.tolist() and np.array_equal(sa, sb)


@needs_native
def test_native_scalar_and_simd_distances_agree(data, monkeypatch):
    """The scalar fallback inside the library gives the same neighbours as the SIMD path."""
    x, q, truth = data
    lib = native_module.load()
    best = lib.isa
    try:
        assert lib.lib.astrai_hnsw_isa(0) == 0
        index = HNSWIndex(64, M=16, ef_construction=100)
        index.add(np.arange(2000), x[:2000])
        scalar_found, _ = index.search_batch(q, 10, ef=64)
    finally:
        lib.lib.astrai_hnsw_isa(native_module.ISA_CAPS[best])
    exact = ExactIndex(64)
    exact.add(np.arange(2000), x[:2000])
    truth2k, _ = exact.search_batch(q, 10)
    assert recall(scalar_found, truth2k) >= 0.95


def test_python_path_recall(data):
    """The compiler-less path is a real index too (smaller set: it is slow)."""
    x, q, _ = data
    index = HNSWIndex(64, M=8, ef_construction=40, use_native=False)
    index.add(np.arange(800), x[:800])
    exact = ExactIndex(64)
    exact.add(np.arange(800), x[:800])
    truth, _ = exact.search_batch(q[:40], 10)
    found, _ = index.search_batch(q[:40], 10, ef=64)
    assert recall(found, truth) >= 0.95


@pytest.mark.parametrize("env,expected", [
    ({"ASTRAI_RETRIEVAL_NATIVE": "0"}, "ASTRAI_RETRIEVAL_NATIVE=0"),
    ({"CXX": "/bin/false"}, "native kernels are unavailable"),  # a compiler that fails
])
def test_without_native_code_the_python_path_runs_with_one_log_line(tmp_path, env, expected):
    script = (
        "import logging, numpy as np\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "from astrai.retrieval import HNSWIndex\n"
        "x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)\n"
        "a = HNSWIndex(8, M=6, ef_construction=20); a.add(np.arange(300), x)\n"
        "b = HNSWIndex(8); b.add([0], x[:1])\n"
        "assert not a.native and not b.native\n"
        "assert a.search(x[7], 1)[0].tolist() == [7]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ASTRAI_KERNEL_CACHE": str(tmp_path), **env})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("astrai.retrieval.native")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
