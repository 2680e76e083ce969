"""The amx variant's code, on every machine that can run it: the real build where the CPU has
AMX, and everywhere that runs avx512 the same code with its tile instructions executed in software
(`amx_emulation()`, csrc/isa/amx_emulation.h, written from the Intel SDM's pseudocode).

References from outside the code under test:
- one tile instruction (TDPBSUD / TDPBSSD) against torch's integer matrix product: this pins the
  emulation to the instruction's definition, and on an AMX CPU the hardware too;
- the quantized linear through the amx code (16-row tiles for whole groups of 16 activation rows,
  the vector kernel for the rest) against `linear_reference_exact` and bit for bit against the
  avx512 variant; a row's output the same bits alone, inside a batch and on any thread count.
"""

from __future__ import annotations

import pytest
import torch
from astrai.model.kernels import NativeUnavailable, amx_emulation, kernels_for
from astrai.model.kernels.build import check_machine
from astrai.model.kernels.isa import support_of
from astrai.model.kernels.quant import QuantType, linear_reference_exact
from gguf_blocks import random_rows
from torch_threads import torch_threads

from .test_qlinear import (
    SHAPES,
    activations,
    assert_matches_reference,
    assert_rows_invariant,
    ggml,
    pack_with,
    qlinear,
    same_bits,
    weight_rows,
)

QTYPES = list(QuantType)
# Whole tiles of 16 rows alone (16, 32), with a vector-kernel tail (17, 33, 50), and more rows
# than one chunk of 64 (100).
MS = (1, 16, 17, 32, 33, 50, 100)


@pytest.fixture(scope="module", params=["amx", "amx_emulated"])
def amx_code(request):
    """The amx code: the real build (on an AMX CPU) or the software-tile build (any avx512 CPU);
    each skips, saying why, where it cannot run."""
    try:
        check_machine()
    except NativeUnavailable as exc:
        pytest.skip(f"this machine cannot build the native kernels: {exc}")
    needs = "amx" if request.param == "amx" else "avx512"
    support = support_of(needs)
    if not support.supported:
        pytest.skip(f"{request.param} needs a CPU that runs {needs}: {support.reason}")
    return kernels_for("amx") if request.param == "amx" else amx_emulation()


@pytest.fixture(scope="module")
def avx512():
    return kernels_for("avx512")


def tile_reference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """c + a . B in int32 with wrap-around, where B[4j + i, n] = b[j, 4n + i] (the B tile's layout)."""
    span = a.shape[1]
    wide = b.to(torch.int64).reshape(span // 4, 16, 4).permute(0, 2, 1).reshape(span, 16)
    exact = c.to(torch.int64) + a.to(torch.int64) @ wide
    return ((exact + 2**31) % 2**32 - 2**31).to(torch.int32)


@pytest.mark.parametrize("span", [16, 32])
@pytest.mark.parametrize("b_signed", [False, True], ids=["tdpbsud", "tdpbssd"])
def test_one_tile_instruction_is_the_integer_matrix_product(amx_code, span, b_signed):
    testing = amx_code.testing_ops()
    generator = torch.Generator().manual_seed(span + b_signed)
    for trial in range(4):
        a = torch.randint(-128, 128, (16, span), dtype=torch.int8, generator=generator)
        if b_signed:
            b = torch.randint(-128, 128, (span // 4, 64), dtype=torch.int8, generator=generator)
        else:
            b = torch.randint(0, 256, (span // 4, 64), dtype=torch.uint8, generator=generator)
        c = torch.randint(-2**20, 2**20, (16, 16), dtype=torch.int32, generator=generator)
        if trial == 3:  # start at the int32 edges: the sums wrap around as the instruction's do
            c[:8] = 2**31 - 1
            c[8:] = -2**31
        got = testing.amx_dot_products(a, b, c, b_signed)
        assert torch.equal(got, tile_reference(a, b, c)), f"span {span}, trial {trial}"


def test_the_tile_operator_checks_its_inputs(amx_code):
    testing = amx_code.testing_ops()
    with pytest.raises(RuntimeError, match="a must be int8"):
        testing.amx_dot_products(torch.zeros(16, 24, dtype=torch.int8), torch.zeros(6, 64, dtype=torch.uint8),
                                 torch.zeros(16, 16, dtype=torch.int32), False)
    with pytest.raises(RuntimeError, match="b must be uint8"):
        testing.amx_dot_products(torch.zeros(16, 32, dtype=torch.int8), torch.zeros(8, 64, dtype=torch.int8),
                                 torch.zeros(16, 16, dtype=torch.int32), False)


@pytest.mark.parametrize("n, k", SHAPES, ids=[f"N{n}-K{k}" for n, k in SHAPES])
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_linear_matches_the_emulation_and_avx512_bit_for_bit(amx_code, avx512, qtype, n, k):
    raw = weight_rows(qtype, n, k, seed=n * 5 + k)
    w = pack_with(amx_code, raw, qtype, k)
    assert torch.equal(w.data, pack_with(avx512, raw, qtype, k).data)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(k))
    xs = [activations(m, k, seed=m + 1) for m in MS]
    got = torch.cat([qlinear(amx_code, x, w, bias if m % 2 else None) for x, m in zip(xs, MS, strict=True)])
    expected = torch.cat([qlinear(avx512, x, w, bias if m % 2 else None) for x, m in zip(xs, MS, strict=True)])
    differ = (got != expected).float().mean().item()
    assert same_bits(got, expected), f"{differ:.3%} of {qtype.name} [{n}, {k}] outputs differ from avx512"
    with torch_threads(1):
        reference = torch.cat([linear_reference_exact(x, w) + (bias if m % 2 else 0) for x, m in zip(xs, MS, strict=True)])
    assert_matches_reference(got, reference)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_a_row_gets_the_same_bits_alone_batched_and_on_any_thread_count(amx_code, qtype):
    n, k = 200, 512
    w = pack_with(amx_code, random_rows(ggml(qtype), n, k, seed=3), qtype, k)
    # 33 rows: two whole tiles through AMX and one row through the vector kernel; rows 7..22 are
    # one AMX tile of other rows
    assert_rows_invariant(amx_code, w, activations(65, k, seed=5), rows=33, alone=(0, 1, 15, 16, 31, 32),
                          inside=slice(7, 23))


def test_out_variant_writes_whole_tiles_into_a_strided_slice(amx_code):
    qtype, n, k = QuantType.Q4_K, 45, 256
    w = pack_with(amx_code, random_rows(ggml(qtype), n, k, seed=2), qtype, k)
    x = activations(32, k, seed=1)
    buffer = torch.full((32, n + 40), -7.0)
    amx_code.ops.qlinear_out(x, w.data, int(qtype), n, k, None, buffer[:, 20 : 20 + n])
    assert same_bits(buffer[:, 20 : 20 + n], qlinear(amx_code, x, w))
    assert bool((buffer[:, :20] == -7.0).all()) and bool((buffer[:, 20 + n :] == -7.0).all())
