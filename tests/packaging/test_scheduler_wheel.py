"""astrai-scheduler's wheel installs alone (with the model and cache wheels it declares) and
generates the same greedy tokens as transformers on a tiny model."""

from __future__ import annotations

PROMPTS = ([3, 9, 27, 81, 17], [3, 9, 27, 81, 40, 41, 42])  # a shared prefix: the radix cache is exercised


def test_scheduler_wheel_generates_alone(make_venv, tiny_llama, greedy_reference):
    directory, reference = tiny_llama
    venv = make_venv("astrai-scheduler")
    venv.check_consistent()
    assert {"astrai-model", "astrai-cache"} <= set(venv.versions())
    out = venv.job("scheduler", directory, *(",".join(map(str, p)) for p in PROMPTS))
    assert out["finish"] == ["length", "length"]
    assert out["tokens"] == [greedy_reference(reference, list(p), 8) for p in PROMPTS]
