"""Temperature sampling (csrc/sampling.cpp) against its torch twin and the distribution itself.

The kernel's token for a row depends on that row alone; it agrees with
`sample_temperature_torch` (the same chunked running mass in torch, whose exp may differ by an
ulp) except where u falls within rounding of a token boundary; every variant picks the same
token (the same operations per lane); and a grid of u values reproduces the softmax exactly up
to the grid's resolution.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from astrai.model import sample_temperature, sample_temperature_torch
from astrai.model.kernels import kernel_variant


def _inputs(rows: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 4.0 * torch.randn(rows, vocab, generator=g)
    temperature = 0.3 + 1.5 * torch.rand(rows, generator=g)
    uniform = torch.rand(rows, generator=g, dtype=torch.float64)
    return logits, temperature, uniform


def _sample(kernels, logits, temperature, uniform) -> torch.Tensor:
    return kernels.ops.sample_temperature(logits, temperature, uniform)


@pytest.mark.parametrize("vocab", [1, 7, 16, 37, 1000, 49152])
def test_agrees_with_the_torch_twin(variant_kernels, vocab):
    logits, temperature, uniform = _inputs(256, vocab, seed=vocab)
    native = _sample(variant_kernels, logits, temperature, uniform)
    twin = sample_temperature_torch(logits, temperature, uniform)
    assert native.dtype == torch.long and native.shape == (256,)
    assert bool(((native >= 0) & (native < vocab)).all())
    assert (native == twin).float().mean().item() >= 0.99, (native != twin).nonzero().flatten().tolist()


def test_a_row_picks_the_same_token_alone_and_in_any_batch(native_kernels):
    logits, temperature, uniform = _inputs(48, 49152, seed=1)
    together = _sample(native_kernels, logits, temperature, uniform)
    for r in (0, 17, 47):
        alone = _sample(native_kernels, logits[r : r + 1].clone(), temperature[r : r + 1], uniform[r : r + 1])
        assert int(alone[0]) == int(together[r])
    order = torch.randperm(48, generator=torch.Generator().manual_seed(2))
    shuffled = _sample(native_kernels, logits[order], temperature[order], uniform[order])
    assert shuffled.tolist() == together[order].tolist()


def test_variants_pick_the_same_tokens(variant_kernels, native_kernels):
    if variant_kernels.variant == native_kernels.variant:
        pytest.skip("the variant this machine runs: compared with the others in their own cases")
    logits, temperature, uniform = _inputs(64, 5003, seed=3)
    assert _sample(variant_kernels, logits, temperature, uniform).tolist() == _sample(
        native_kernels, logits, temperature, uniform).tolist()


def test_a_grid_of_draws_reproduces_the_softmax(native_kernels):
    logits = torch.tensor([[0.0, 1.0, -0.5, 2.0, float("-inf"), 0.25]])
    temperature = torch.tensor([0.8])
    steps = 4000
    counts = torch.zeros(6)
    for k in range(steps):
        token = _sample(native_kernels, logits, temperature, torch.tensor([(k + 0.5) / steps], dtype=torch.float64))
        counts[int(token[0])] += 1
    expected = torch.softmax(logits[0] / 0.8, dim=0)
    assert counts[4] == 0  # an -inf logit is never picked
    assert torch.allclose(counts / steps, expected, atol=1.5 / steps)


def test_rows_without_a_finite_maximum_are_minus_one(native_kernels):
    logits = torch.zeros(3, 40)
    logits[0] = float("-inf")
    logits[1, 3] = float("nan")
    logits[2, 5] = float("inf")
    out = _sample(native_kernels, logits, torch.ones(3), torch.full((3,), 0.5, dtype=torch.float64))
    assert out.tolist() == [-1, -1, -1]


def test_bad_arguments_name_the_problem(native_kernels):
    logits = torch.zeros(2, 8)
    with pytest.raises(RuntimeError, match="temperature must be positive"):
        _sample(native_kernels, logits, torch.tensor([1.0, 0.0]), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"uniform must lie in \[0, 1\)"):
        _sample(native_kernels, logits, torch.ones(2), torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="float32"):
        _sample(native_kernels, logits.double(), torch.ones(2), torch.zeros(2, dtype=torch.float64))


def test_the_public_function_casts_its_arguments_and_reads_strided_rows(native_kernels):
    if native_kernels.variant != kernel_variant():
        pytest.skip("the engine runs another variant here")
    logits, temperature, uniform = _inputs(8, 300, seed=4)
    wide = torch.zeros(8, 600)
    wide[:, ::2] = logits
    strided = wide[:, ::2]
    picked = sample_temperature(strided, temperature.double(), uniform.float())
    assert picked is not None
    assert picked.tolist() == _sample(native_kernels, logits, temperature, uniform.float().double()).tolist()


FIRST_USE = """
import torch
from astrai.model import sample_temperature
from astrai.model.kernels import kernels
args = (torch.zeros(2, 64), torch.ones(2), torch.full((2,), 0.5, dtype=torch.float64))
print("before", sample_temperature(*args) is None)
kernels()
print("after", sample_temperature(*args) is None)
"""


def test_the_public_function_never_builds_the_kernels(native_kernels):
    # An engine whose forward runs in torch must not stall on a first compile when it samples.
    env = {**os.environ, "ASTRAI_KERNELS": "auto"}
    result = subprocess.run([sys.executable, "-c", FIRST_USE], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "before True" in result.stdout and "after False" in result.stdout, result.stdout
