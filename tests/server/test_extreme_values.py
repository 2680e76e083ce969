"""Valid but extreme sampling values: each is served (200), and the engine keeps serving others."""

from __future__ import annotations

import pytest

from .conftest import MODEL

EXTREMES = [
    {"top_k": 10**30},
    {"top_k": 1},
    {"top_k": -1},
    {"top_k": 0},
    {"top_p": 1e-9, "temperature": 1.0},
    {"top_p": 0.0},
    {"min_p": 1.0, "temperature": 2.0},
    {"temperature": 2.0, "seed": 2**63 - 1},
    {"temperature": 1e-30},
    {"seed": 0, "temperature": 1.0},
    {"repetition_penalty": 10.0},
    {"repetition_penalty": 1e-6},
    {"presence_penalty": -2.0, "frequency_penalty": 2.0},
    {"min_tokens": 3, "max_tokens": 3},
    {"stop": ["\n", ".", " ", "a"] * 4},
    {"logprobs": 20},
    {"logprobs": 0},
    {"echo": True, "max_tokens": 1},
    {"user": "someone", "store": False, "metadata": {"k": "v"}, "service_tier": "auto"},
]


@pytest.mark.parametrize("fields", EXTREMES, ids=lambda f: ",".join(f"{k}={v}"[:30] for k, v in f.items()))
def test_extreme_but_valid_values_are_served(http, fields):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 3, **fields}
    reply = http.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    if "min_tokens" in fields:
        assert reply.json()["usage"]["completion_tokens"] == 3
    if fields.get("logprobs") == 20:
        assert all(len(top) == 20 for top in choice["logprobs"]["top_logprobs"])
