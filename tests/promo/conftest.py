"""Fixtures for the astrai-promo tests.

A small handcrafted trace whose every beat can be worked out by hand:

Pool of 12 pages of 4 tokens. r1 (5 prompt tokens) runs alone, r2 joins and shares r1's first
page (two requests on one page), r1 finishes and frees page 1, r3 joins and reuses page 1, r2 finishes leaving page 0 in
the prefix cache, which is then evicted; r3 finishes and the pool is empty again.
"""

from __future__ import annotations

import copy

import pytest


def _step(n, *, arrived=(), prefill=(), decode=(), finished=(), allocated=(), shared=(), freed=(),
          evicted=(), tables=None, free=12, cached=0):
    return {
        "step": n,
        "time": 0.01 * n,
        "phases_ms": {"schedule": 0.3, "build_batch": 3.0 if prefill else 0.0, "forward": 4.0, "sample": 1.0},
        "prefill": [dict(p) for p in prefill],
        "decode": list(decode),
        "arrived": list(arrived),
        "finished": [dict(f) for f in finished],
        "preempted": [],
        "pages": {"allocated": list(allocated), "shared": list(shared), "copied": [], "freed": list(freed),
                  "evicted": list(evicted)},
        "page_tables": tables or {},
        "num_waiting": 0,
        "num_running": len(tables or {}),
        "num_free_pages": free,
        "num_cached_pages": cached,
        "num_pages": 12,
    }


_TRACE = {
    "format": "astrai-trace",
    "version": 2,
    "packages": {"astrai-model": "0.1.0", "astrai-cache": "0.1.0", "astrai-scheduler": "0.1.0",
                 "astrai-server": "0.1.0", "astrai-promo": "0.1.0"},
    "model": {"name": "smollm2-135m-instruct", "architecture": "llama", "vocab_size": 49152, "hidden_size": 576,
              "intermediate_size": 1536, "num_layers": 30, "num_heads": 9, "num_kv_heads": 3, "head_dim": 64,
              "dtype": "float32", "num_parameters": 134515008},
    "engine": {"page_size": 4, "num_pages": 12, "max_num_seqs": 4, "dtype": "float32"},
    "modules": {"engine": "astrai.scheduler.engine", "scheduler": "astrai.scheduler.scheduler",
                "cache": "astrai.cache.manager", "model": "astrai.model.transformer", "server": "astrai.server"},
    "requests": [
        {"request_id": "r1", "arrival": 0.0, "prompt_tokens": 5, "output_tokens": 4},
        {"request_id": "r2", "arrival": 0.02, "prompt_tokens": 5, "output_tokens": 3},
        {"request_id": "r3", "arrival": 0.04, "prompt_tokens": 5, "output_tokens": 3},
    ],
    "steps": [
        _step(0, arrived=["r1"], prefill=[{"request_id": "r1", "num_tokens": 5, "cached_tokens": 0, "start": 0}],
              allocated=[0, 1], tables={"r1": [0, 1]}, free=10),
        _step(1, decode=["r1"], tables={"r1": [0, 1]}, free=10),
        _step(2, arrived=["r2"], prefill=[{"request_id": "r2", "num_tokens": 1, "cached_tokens": 4, "start": 4}],
              decode=["r1"], allocated=[2], shared=[0], tables={"r1": [0, 1], "r2": [0, 2]}, free=9),
        _step(3, decode=["r1", "r2"], finished=[{"request_id": "r1", "finish_reason": "length", "output_tokens": 4}],
              freed=[1], tables={"r2": [0, 2]}, free=10),
        _step(4, arrived=["r3"], prefill=[{"request_id": "r3", "num_tokens": 5, "cached_tokens": 0, "start": 0}],
              decode=["r2"], finished=[{"request_id": "r2", "finish_reason": "length", "output_tokens": 3}],
              allocated=[1, 3], freed=[2], tables={"r3": [1, 3]}, free=9, cached=1),
        _step(5, decode=["r3"], evicted=[0], tables={"r3": [1, 3]}, free=10),
        _step(6, decode=["r3"], finished=[{"request_id": "r3", "finish_reason": "stop", "output_tokens": 3}],
              freed=[1, 3], free=12),
    ],
    "throughput": {
        "static": {"tokens": 10, "seconds": 0.1, "tokens_per_s": 100.0},
        "continuous": {"tokens": 10, "seconds": 0.0292, "tokens_per_s": 342.0},
        "ratio": 3.42,
    },
}


@pytest.fixture
def trace_dict() -> dict:
    """A fresh deep copy of the handcrafted trace, so a test may edit it freely."""
    return copy.deepcopy(_TRACE)


@pytest.fixture
def manim_media(tmp_path_factory):
    """Point Manim's media dir (where Text caches its SVGs) at a temporary folder."""
    from manim import tempconfig

    with tempconfig({"media_dir": str(tmp_path_factory.mktemp("manim-media"))}):
        yield
