"""astrai-retrieval's wheel installs alone (numpy and astrai-cache are its dependencies) and
runs a durable hybrid store, its HNSW graph and cache-aware ordering."""

from __future__ import annotations


def test_retrieval_wheel_searches_a_durable_store_alone(make_venv):
    venv = make_venv("astrai-retrieval")
    venv.check_consistent()
    installed = set(venv.versions())
    assert {"astrai-cache", "numpy"} <= installed
    assert installed & {"astrai-model", "astrai-scheduler", "astrai-server", "tokenizers"} == set()
    out = venv.job("retrieval")
    assert out["passages"] == 300 and out["dense_index"] == "hnsw"
    assert out["hybrid"] == ["p42", 1, 1] and out["dense"] == "p7" and out["sparse"] == "p99"
    assert out["filtered"] == [0, 1, 2, 3, 4]
    assert out["order"][:2] == ["p9", "p3"] and out["torch_loaded"]  # the sketch came from astrai-cache
