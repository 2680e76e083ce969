"""Fused per-layer ops: native kernels and torch twins against the model's own layers.

References are astrai.model's modules and functions (RMSNorm, apply_rotary with RotaryTable,
F.silu); the native ops must agree within float32 rounding (RMSNorm's sum runs in a different
order: |err| <= 1e-6 + 1e-6 |ref|), and bit for bit where the arithmetic is the same (rotary,
the residual add).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from astrai.model.kernels import fused_ops
from astrai.model.layers import RMSNorm
from astrai.model.rope import RotaryTable, apply_rotary

TOL = {"rtol": 1e-6, "atol": 1e-6}


def randn(*shape: int, seed: int = 0, gain: float = 1.0) -> torch.Tensor:
    return gain * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def rms_module(size: int, eps: float, seed: int) -> RMSNorm:
    norm = RMSNorm(size, eps, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * randn(size, seed=seed))
    return norm


@pytest.mark.parametrize("tokens, size", [(1, 576), (7, 576), (64, 576), (3, 37), (5, 4096)])
def test_rms_norm(variant_kernels, tokens, size):
    norm = rms_module(size, 1e-5, seed=size)
    x = randn(tokens, size, seed=1, gain=3.0)
    expected = norm(x)
    out = torch.full_like(x, float("nan"))
    variant_kernels.ops.rms_norm(x, norm.weight.detach(), norm.eps, out)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(fused_ops.rms_norm_torch(x, norm.weight.detach(), norm.eps), expected, rtol=0, atol=0)
    torch.testing.assert_close(fused_ops.rms_norm(x, norm.weight.detach(), norm.eps), out, rtol=0, atol=0)


def test_rms_norm_in_place_on_a_strided_view(variant_kernels):
    norm = rms_module(64, 1e-6, seed=3)
    wide = randn(6, 100, seed=2)
    x = wide[:, 10:74]
    expected = norm(x.clone())
    variant_kernels.ops.rms_norm(x, norm.weight.detach(), norm.eps, x)
    torch.testing.assert_close(x, expected, **TOL)
    assert torch.equal(wide[:, :10], randn(6, 100, seed=2)[:, :10])


@pytest.mark.parametrize("tokens", [1, 9, 130])
def test_add_rms_norm_is_the_pre_norm_step(variant_kernels, tokens):
    """residual += x; x = norm(residual): what DecoderLayer does between its sublayers."""
    norm = rms_module(576, 1e-5, seed=7)
    sublayer_out, hidden = randn(tokens, 576, seed=4), randn(tokens, 576, seed=5, gain=2.0)
    expected_hidden = hidden + sublayer_out
    expected_normed = norm(expected_hidden)
    for op in (variant_kernels.ops.add_rms_norm, fused_ops.add_rms_norm_torch, fused_ops.add_rms_norm):
        x, residual = sublayer_out.clone(), hidden.clone()
        op(x, residual, norm.weight.detach(), norm.eps)
        assert torch.equal(residual, expected_hidden)
        torch.testing.assert_close(x, expected_normed, **TOL)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_head_rms_norm_on_q_and_k_slices_of_qkv(variant_kernels, head_dim):
    """qwen3's per-head q/k norm, applied in place to views of the fused qkv output."""
    tokens, heads, kv_heads = 5, 8, 2
    q_norm = rms_module(head_dim, 1e-6, seed=head_dim)
    qkv = randn(tokens, (heads + 2 * kv_heads) * head_dim, seed=8)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    v_before = qkv[:, (heads + kv_heads) * head_dim :].clone()
    expected = q_norm(q.clone())
    twin = q.clone()
    variant_kernels.ops.head_rms_norm(q, q_norm.weight.detach(), q_norm.eps)
    fused_ops.head_rms_norm_torch(twin, q_norm.weight.detach(), q_norm.eps)
    torch.testing.assert_close(q, expected, **TOL)
    torch.testing.assert_close(twin, expected, rtol=0, atol=0)
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim :], v_before)


@pytest.mark.parametrize("head_dim", [64, 128, 72])
@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 512}])
def test_rotary_matches_apply_rotary_bit_for_bit(variant_kernels, head_dim, scaling):
    tokens, heads, kv_heads = 6, 9, 3
    table = RotaryTable(head_dim, 10000.0, scaling, torch.device("cpu"))
    positions = torch.tensor([0, 1, 17, 300, 4095, 2])
    cos, sin = table.lookup(positions, int(positions.max()), torch.float32)
    qkv = randn(tokens, (heads + 2 * kv_heads) * head_dim, seed=head_dim)
    qk = qkv[:, : (heads + kv_heads) * head_dim].view(tokens, heads + kv_heads, head_dim)
    expected = apply_rotary(qk.clone(), cos, sin)
    v_before = qkv[:, (heads + kv_heads) * head_dim :].clone()
    twin = qk.clone()
    variant_kernels.ops.rotary(qk, positions, table.cos, table.sin)
    fused_ops.rotary_torch(twin, positions, table.cos, table.sin)
    assert torch.equal(qk, expected)
    assert torch.equal(twin, expected)
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim :], v_before)


@pytest.mark.parametrize("tokens, inner", [(1, 1536), (33, 1536), (4, 13)])
def test_silu_mul(variant_kernels, tokens, inner):
    gate_up = randn(tokens, 2 * inner, seed=inner, gain=4.0)
    gate_up[0, :6] = torch.tensor([0.0, -100.0, 100.0, -89.0, 89.0, 1e-8])  # exp's clamps and tiny inputs
    gate, up = gate_up.chunk(2, dim=-1)
    expected = F.silu(gate) * up
    out = torch.full((tokens, inner), float("nan"))
    variant_kernels.ops.silu_mul(gate_up, out)
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(fused_ops.silu_mul_torch(gate_up), expected, rtol=0, atol=0)
    torch.testing.assert_close(fused_ops.silu_mul(gate_up), out, rtol=0, atol=0)


@pytest.mark.parametrize("tokens, inner", [(1, 2048), (17, 2048), (3, 13)])
def test_gelu_tanh_mul(variant_kernels, tokens, inner):
    gate_up = randn(tokens, 2 * inner, seed=inner, gain=4.0)
    gate_up[0, :6] = torch.tensor([0.0, -100.0, 100.0, -9.0, 9.0, 1e-8])  # tanh's saturation and tiny inputs
    gate, up = gate_up.chunk(2, dim=-1)
    expected = F.gelu(gate, approximate="tanh") * up
    g = gate.double()
    exact = 0.5 * g * (1 + torch.tanh(0.7978845608028654 * (g + 0.044715 * g**3))) * up.double()
    out = torch.full((tokens, inner), float("nan"))
    variant_kernels.ops.gelu_tanh_mul(gate_up, out)
    # as close to the float64 value as torch's own float32 result is (both ~1e-7 of the largest value)
    scale = float(exact.abs().max())
    assert float((out.double() - exact).abs().max()) <= 1e-7 * scale
    assert float((expected.double() - exact).abs().max()) <= 1e-7 * scale
    torch.testing.assert_close(fused_ops.gelu_tanh_mul_torch(gate_up), expected, rtol=0, atol=0)
    torch.testing.assert_close(fused_ops.gelu_tanh_mul(gate_up), out, rtol=0, atol=0)


def test_dispatchers_fall_back_to_torch_for_other_dtypes(variant_kernels):
    norm = RMSNorm(64, 1e-6, torch.bfloat16, torch.device("cpu"))
    x = randn(3, 64, seed=1).bfloat16()
    torch.testing.assert_close(fused_ops.rms_norm(x, norm.weight.detach(), 1e-6), norm(x), rtol=0, atol=0)
    gate_up = randn(3, 32, seed=2).bfloat16()
    g, u = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(fused_ops.silu_mul(gate_up), F.silu(g) * u, rtol=0, atol=0)


ERRORS = {
    "rms_norm weight size": (lambda ops: ops.rms_norm(torch.ones(2, 8), torch.ones(7), 1e-6, torch.ones(2, 8)), "weight"),
    "rms_norm dtype": (lambda ops: ops.rms_norm(torch.ones(2, 8).double(), torch.ones(8), 1e-6, torch.ones(2, 8)), "float32"),
    "rotary position past the table": (
        lambda ops: ops.rotary(torch.ones(1, 2, 8), torch.tensor([9]), torch.ones(4, 8), torch.ones(4, 8)), "outside"),
    "silu_mul out shape": (lambda ops: ops.silu_mul(torch.ones(2, 8), torch.ones(2, 8)), "out must be"),
    "gelu_tanh_mul out shape": (lambda ops: ops.gelu_tanh_mul(torch.ones(2, 8), torch.ones(2, 8)), "out must be"),
}


@pytest.mark.parametrize("call, message", ERRORS.values(), ids=ERRORS.keys())
def test_bad_inputs_raise_clear_errors(variant_kernels, call, message):
    with pytest.raises(RuntimeError, match=message):
        call(variant_kernels.ops)
