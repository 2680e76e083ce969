"""astrai-cache's wheel installs alone (torch is its only dependency) and runs a page pool."""

from __future__ import annotations


def test_cache_wheel_shares_a_cached_prefix_alone(make_venv):
    venv = make_venv("astrai-cache")
    venv.check_consistent()
    assert set(venv.versions()) & {"astrai-model", "numpy", "tokenizers"} == set()
    out = venv.job("cache")
    assert out["cached"] == 8 and out["shared_pages"] == 2 and out["kv_equal"]
    assert out["free"] + out["cached_pages"] == out["num_pages"] == 8 and out["cached_pages"] >= 2
