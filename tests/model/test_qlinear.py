"""Quantized linears over GGUF Q4_0 / Q4_1 / Q8_0 weights: packing, native kernel, torch paths.

References: `gguf.quants.dequantize` for the block formats (the packed weight must dequantize
bit-identically); `linear_reference_exact`, the torch emulation of the kernel's arithmetic, which
the native kernel must match to fp32 rounding (in practice bit for bit); and F.linear on the
dequantized weight, which the kernel may miss only by what the two-part (~15-bit) activation
quantization can cost: per output |err| <= sum over blocks of (amax(x_block) / 64516) * ||w_block||_1.
"""

from __future__ import annotations

import shutil

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astrai.model import bundled_gguf_path
from astrai.model.gguf_loader import GGUFFile, unpermute_rows
from astrai.model.kernels import kernels as native_kernels_in_use
from astrai.model.kernels import native, native_unavailable_reason, quant
from astrai.model.kernels.quant import (
    PackedWeight,
    QuantType,
    dequantize,
    gguf_nbytes,
    linear,
    linear_reference_exact,
    pack_gguf,
    quantize_activations_reference,
)

QTYPES = list(QuantType)
KS = [32, 64, 576, 1536]
NS = [1, 50, 192, 960, 3072]
MS = [1, 2, 3, 7, 16, 17, 64, 200]
# Emulating the kernel in torch costs ~M*N*K: the larger batches only where that stays cheap
# (every M still meets several (N, K), and every (N, K) meets M = 1 and 2 or more).
REFERENCE_BUDGET = 10_000_000


def machine_can_build() -> bool:
    return (shutil.which("c++") is not None or shutil.which("g++") is not None) and \
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@pytest.fixture(scope="session")
def kernels():
    """The native kernels in use: a machine that can build them must (a failure here, never a skip)."""
    chosen = native_kernels_in_use()
    if chosen is None:
        if machine_can_build() and native_unavailable_reason() != "disabled by ASTRAI_KERNELS=torch":
            pytest.fail(f"native kernels did not build on a machine with a C++ compiler and AVX2: "
                        f"{native_unavailable_reason()}")
        pytest.skip(f"native kernels unavailable here: {native_unavailable_reason()}")
    return chosen


def test_native_kernels_build_where_a_compiler_and_avx2_exist():
    if not machine_can_build():
        pytest.skip("no C++ compiler or no AVX2 here: the torch path is the one that runs")
    assert native() is not None, f"native() is None: {native_unavailable_reason()}"


def random_raw(qtype: QuantType, n: int, k: int, seed: int) -> np.ndarray:
    """Arbitrary valid GGUF block rows: random quant bytes (Q8_0 includes -128), finite fp16 scales."""
    generator = torch.Generator().manual_seed(seed)
    nb = k // 32
    scales = (torch.rand(n, nb, 2, generator=generator) * 0.2 - 0.1).half().view(torch.uint8).reshape(n, nb, 4)
    quants = torch.randint(0, 256, (n, nb, 32 if qtype is QuantType.Q8_0 else 16), dtype=torch.uint8,
                           generator=generator)
    head = scales if qtype is QuantType.Q4_1 else scales[..., :2]
    return torch.cat([head, quants], dim=-1).reshape(n, -1).numpy()


def quantized_raw(qtype: QuantType, n: int, k: int, seed: int) -> np.ndarray:
    """Rows made by gguf's own quantizer from a normal weight."""
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(n, k, generator=generator) * 0.05).numpy()
    return gguf.quants.quantize(weight, gguf.GGMLQuantizationType(int(qtype)))


def gguf_dequantize(raw: np.ndarray, qtype: QuantType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(qtype)))))


def activations(m: int, k: int, seed: int) -> torch.Tensor:
    """Normal rows with outliers and an all-zero block, as real hidden states have."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=generator)
    x[:, 0] *= 20.0
    if k >= 64:
        x[0, 32:64] = 0.0
    return x


def assert_matches_reference(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Same arithmetic: equal to fp32 rounding, and nearly every element bit for bit."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    excess = (got - expected).abs() - (1e-5 * expected.abs() + 1e-6 * scale)
    assert got.shape == expected.shape and float(excess.max()) <= 0, f"beyond fp32 rounding by {float(excess.max())}"
    identical = (got == expected).float().mean().item()
    assert identical >= 0.999, f"only {identical:.4%} of outputs are bit-identical to the emulation"


def assert_within_activation_quantization(got: torch.Tensor, x: torch.Tensor, w: PackedWeight,
                                          bias: torch.Tensor | None = None) -> None:
    """|native - F.linear(x, W)| <= sum_b amax(x_b)/64516 * ||W_b||_1 per output (+ fp32 slack)."""
    weight = dequantize(w)
    expected = F.linear(x, weight, bias)
    nb = w.in_features // 32
    step = x.reshape(x.shape[0], nb, 32).abs().amax(-1) / (2 * 127 * 254)  # half the low part's step
    bound = step @ weight.abs().reshape(w.out_features, nb, 32).sum(-1).T
    slack = 1e-5 * (x.abs() @ weight.abs().T) + 1e-6
    excess = (got - expected).abs() - (bound * 1.0001 + slack)
    assert float(excess.max()) <= 0, f"error beyond the activation quantization bound by {float(excess.max())}"


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", NS)
def test_kernel_matches_emulation_and_fp32(kernels, qtype, k, n):
    w = pack_gguf(random_raw(qtype, n, k, seed=n * 7 + k), qtype, k)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(k))
    batches = [m for m in MS if m == 1 or m * n * k <= REFERENCE_BUDGET]
    xs = [activations(m, k, seed=m) for m in batches]
    plain = torch.cat([kernels.ops.qlinear(x, w.data, int(qtype), n, k, None) for x in xs])
    with_bias = torch.cat([kernels.ops.qlinear(x, w.data, int(qtype), n, k, bias) for x in xs])
    # Rows are independent (tested below): one emulation over all batches' rows checks them all.
    x = torch.cat(xs)
    expected = linear_reference_exact(x, w)
    assert_matches_reference(plain, expected)
    assert_matches_reference(with_bias, expected + bias)
    assert_within_activation_quantization(with_bias, x, w, bias)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_quantizer_made_weights(kernels, qtype):
    """Weights from gguf's own quantizer (realistic scales and mins), odd shapes."""
    w = pack_gguf(quantized_raw(qtype, 200, 576, seed=5), qtype, 576)
    x = activations(17, 576, seed=9)
    got = linear(x, w)
    assert_matches_reference(got, linear_reference_exact(x, w))
    assert_within_activation_quantization(got, x, w, None)


def test_activation_quantization_is_bit_identical(kernels):
    x = activations(9, 576, seed=2)
    x[1, :32] = 1e-30  # denormal-free tiny block
    x[2, :32] = torch.arange(32) - 15.5  # ties at .5 after scaling? (d = 15.5/127)
    x[3, :32] = torch.linspace(-1.0, 1.0, 32) * 127.0  # d == 1: exact halves round to even
    x[3, 0], x[3, 1] = 2.5, -3.5
    got = kernels.testing_ops().quantize_activations(x)
    want = quantize_activations_reference(x)
    for name, a, b in zip(("q_hi", "q_lo", "d", "ds", "sum"), got, want, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), f"activation {name} differs"
    assert int(got[0].abs().max()) <= 127 and int(got[1].abs().max()) <= 127
    # x ~ d * (254 * q_hi + q_lo) to half a step of d (plus fp32 rounding), tiny blocks zero
    error = ((got[0].float() * 254 + got[1].float()).reshape(9, 18, 32) * got[2][..., None]).sub(x.reshape(9, 18, 32)).abs()
    assert bool((error <= got[2][..., None] * 0.5 * 1.001 + 1e-6 * x.reshape(9, 18, 32).abs()).all())
    # a reusable buffer, larger than needed: q_hi, q_lo, the int16 a = 254*q_hi + q_lo, then d, ds, sum
    storage = torch.empty(4 * 9 * 576 + 12 * 9 * 18 + 100, dtype=torch.uint8)
    into = kernels.testing_ops().quantize_activations(x, storage)
    assert all(torch.equal(a, b) for a, b in zip(into, got, strict=True)) and into[0].data_ptr() == storage.data_ptr()
    with pytest.raises(RuntimeError, match="at least 22680 bytes"):
        kernels.testing_ops().quantize_activations(x, storage[:22679])


def test_batch_rows_and_thread_count_do_not_change_results(kernels):
    """A row's output is the same alone, in a batch of 17, and on one thread (bitwise)."""
    qtype, n, k = QuantType.Q4_1, 960, 576
    w = pack_gguf(random_raw(qtype, n, k, seed=1), qtype, k)
    x = activations(17, k, seed=4)
    batch = linear(x, w)
    for row in (0, 5, 16):
        assert torch.equal(linear(x[row : row + 1], w), batch[row : row + 1])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(linear(x, w), batch)
    finally:
        torch.set_num_threads(threads)


def test_out_variant_writes_into_a_strided_slice(kernels):
    qtype, n, k = QuantType.Q4_0, 192, 64
    w = pack_gguf(random_raw(qtype, n, k, seed=2), qtype, k)
    x = activations(5, k, seed=1)
    buffer = torch.full((5, n + 40), -7.0)
    result = kernels.ops.qlinear_out(x, w.data, int(qtype), n, k, None, buffer[:, 20 : 20 + n])
    assert torch.equal(buffer[:, 20 : 20 + n], linear(x, w)) and result.data_ptr() == buffer[:, 20:].data_ptr()
    assert bool((buffer[:, :20] == -7.0).all()) and bool((buffer[:, 20 + n :] == -7.0).all())


def test_empty_batch(kernels):
    w = pack_gguf(random_raw(QuantType.Q8_0, 50, 64, seed=0), QuantType.Q8_0, 64)
    assert linear(torch.zeros(0, 64), w).shape == (0, 50)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("n, k", [(1, 32), (50, 64), (192, 576), (13, 1536)])
def test_packing_round_trip_is_exact(qtype, n, k):
    for raw in (random_raw(qtype, n, k, seed=n + k), quantized_raw(qtype, n, k, seed=k)):
        w = pack_gguf(raw, qtype, k)
        assert (w.out_features, w.in_features, w.qtype) == (n, k, qtype)
        assert torch.equal(dequantize(w), gguf_dequantize(raw, qtype))
        strided = torch.zeros(n, raw.shape[1] + 8, dtype=torch.uint8)
        strided[:, 4:-4] = torch.from_numpy(raw)  # rows with a stride: packed through a copy
        assert torch.equal(pack_gguf(strided[:, 4:-4], qtype, k).data, w.data)
        padding_rows = -(-n // 8) * 8 - n  # zero rows up to a multiple of 8; nothing else is added
        assert w.nbytes - gguf_nbytes(qtype, n, k) == padding_rows * (k // 32) * qtype.block_bytes


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_packing_concatenated_and_row_permuted_raws(qtype):
    """Fused q/k/v: raw rows un-permuted per head and concatenated before packing."""
    k, heads, kv_heads = 64, 4, 2
    q_raw, k_raw, v_raw = (random_raw(qtype, rows, k, seed=s) for s, rows in enumerate((64, 32, 32)))
    fused_raw = torch.cat([unpermute_rows(torch.from_numpy(q_raw), heads), unpermute_rows(torch.from_numpy(k_raw), kv_heads),
                           torch.from_numpy(v_raw)])
    expected = torch.cat([unpermute_rows(gguf_dequantize(q_raw, qtype), heads),
                          unpermute_rows(gguf_dequantize(k_raw, qtype), kv_heads), gguf_dequantize(v_raw, qtype)])
    assert torch.equal(dequantize(pack_gguf(fused_raw, qtype, k)), expected)


@pytest.fixture(scope="module")
def bundled():
    return GGUFFile(bundled_gguf_path())


def raw_rows(file: GGUFFile, name: str) -> torch.Tensor:
    info = file.tensors[name]
    return torch.from_numpy(file.container.raw(info).copy()).reshape(info.shape[0], -1)


def test_real_fused_qkv_q4_1_matches_the_loader(bundled, kernels):
    """The bundled model's layer-0 q/k/v (Q4_1), fused as astrai fuses them."""
    config = bundled.config("smollm2")
    prefix = "model.layers.0.self_attn."
    names = [prefix + f"{p}_proj.weight" for p in "qkv"]
    assert all(bundled.tensors[n].type_id == QuantType.Q4_1 for n in names)
    fused_raw = torch.cat([unpermute_rows(raw_rows(bundled, names[0]), config.num_heads),
                           unpermute_rows(raw_rows(bundled, names[1]), config.num_kv_heads), raw_rows(bundled, names[2])])
    w = pack_gguf(fused_raw, QuantType.Q4_1, config.hidden_size)
    assert (w.out_features, w.in_features) == (960, 576)
    assert torch.equal(dequantize(w), torch.cat([bundled.tensor(n, config)[0] for n in names]))
    x = activations(5, 576, seed=11)
    got = linear(x, w)
    assert_matches_reference(got, linear_reference_exact(x, w))
    assert_within_activation_quantization(got, x, w, None)


def test_real_token_embedding_q8_0_as_lm_head(bundled, kernels):
    """The tied 49152 x 576 Q8_0 embedding as LM head (the batch-1 step's largest read)."""
    config = bundled.config("smollm2")
    name = "model.embed_tokens.weight"
    assert bundled.tensors[name].type_id == QuantType.Q8_0
    w = pack_gguf(raw_rows(bundled, name), QuantType.Q8_0, config.hidden_size)
    assert torch.equal(dequantize(w), bundled.tensor(name, config)[0])
    x = activations(2, 576, seed=12)
    got = linear(x, w)
    assert_matches_reference(got, linear_reference_exact(x, w))
    assert_within_activation_quantization(got, x, w, None)
    assert torch.equal(linear(x[1:], w), got[1:])  # one row alone: the batch-1 LM head


def test_torch_path_is_dequantize_then_linear(monkeypatch):
    """Without the native module `linear` is exactly F.linear on the dequantized weight."""
    monkeypatch.setattr(quant, "native", lambda: None)
    for qtype in QTYPES:
        w = pack_gguf(random_raw(qtype, 50, 64, seed=1), qtype, 64)
        x = activations(6, 64, seed=3).reshape(2, 3, 64)
        bias = torch.randn(50)
        got = linear(x, w, bias)
        assert got.shape == (2, 3, 50)
        assert torch.equal(got, F.linear(x, gguf_dequantize(random_raw(qtype, 50, 64, seed=1), qtype), bias))


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
def test_bad_inputs_get_clear_errors(monkeypatch, request, use_native):
    if use_native:
        request.getfixturevalue("kernels")
    else:
        monkeypatch.setattr(quant, "native", lambda: None)
    w = pack_gguf(random_raw(QuantType.Q4_1, 64, 64, seed=0), QuantType.Q4_1, 64)
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match="contiguous"):
        linear(torch.randn(64, 4).T, w)
    with pytest.raises(ValueError, match="contiguous"):
        linear(torch.randn(4, 128)[:, ::2], w)
    with pytest.raises(TypeError, match="float32"):
        linear(x.double(), w)
    with pytest.raises(TypeError, match="float32"):
        linear(x.bfloat16(), w)
    with pytest.raises(ValueError, match=r"expects \[\.\.\., 64\]"):
        linear(torch.randn(4, 96), w)
    with pytest.raises(ValueError, match="bias"):
        linear(x, w, torch.randn(63))
    with pytest.raises(ValueError, match="bytes"):
        linear(x, PackedWeight(w.qtype, w.out_features, w.in_features, w.data[:-1]))


def test_native_op_checks_its_inputs(kernels):
    w = pack_gguf(random_raw(QuantType.Q8_0, 16, 64, seed=0), QuantType.Q8_0, 64)
    op = kernels.ops.qlinear
    with pytest.raises(RuntimeError, match="contiguous"):
        op(torch.randn(64, 3).T, w.data, 8, 16, 64, None)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.randn(3, 64).double(), w.data, 8, 16, 64, None)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        op(torch.randn(3, 48), w.data, 8, 16, 48, None)
    with pytest.raises(RuntimeError, match="expected"):
        op(torch.randn(3, 64), w.data, 3, 16, 64, None)  # Q4_1 needs fewer bytes than this Q8_0 weight
    with pytest.raises(RuntimeError, match="unsupported quantization type id 12"):
        op(torch.randn(3, 64), w.data, 12, 16, 64, None)
    with pytest.raises(RuntimeError, match="bias"):
        op(torch.randn(3, 64), w.data, 8, 16, 64, torch.randn(16).double())


def test_pack_gguf_rejects_bad_rows():
    raw = random_raw(QuantType.Q4_1, 8, 64, seed=0)
    with pytest.raises(ValueError, match=r"need shape \[N, 40\]"):
        pack_gguf(raw[:, :-1], QuantType.Q4_1, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_gguf(raw, QuantType.Q4_1, 48)
    with pytest.raises(TypeError, match="uint8"):
        pack_gguf(torch.zeros(8, 40, dtype=torch.int32), QuantType.Q4_1, 64)
    with pytest.raises(ValueError, match="12"):
        pack_gguf(raw, 12, 64)
