"""Fused small per-layer ops of a pre-norm decoder: native kernel or pure-torch twin.

Each op computes what astrai.model's layers compute (RMSNorm in float32, rotate-half rotary,
SwiGLU's silu x up), in place where a forward would overwrite its input anyway. The native
kernels (csrc/ops.cpp) take float32 CPU tensors whose last dimension is contiguous (views of a
fused projection output are fine); anything else runs the torch twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..rope import apply_rotary
from . import native, ops


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """weight * (x * rsqrt(mean(x^2) + eps)) over the last dim of x [T, C]; returns out."""
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if _native_fits(x, out, weight) and x.dim() == 2:
        ops().rms_norm(x, weight, eps, out)
        return out
    return rms_norm_torch(x, weight, eps, out)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    """Pre-norm step between sublayers, in place: residual += x, then x = rms_norm(residual)."""
    if _native_fits(x, residual, weight) and x.dim() == 2:
        ops().add_rms_norm(x, residual, weight, eps)
        return
    add_rms_norm_torch(x, residual, weight, eps)


def head_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    """Per-head RMSNorm in place over x [T, heads, D] (qwen3's q/k norm)."""
    if _native_fits(x, x, weight) and x.dim() == 3:
        ops().head_rms_norm(x, weight, eps)
        return
    head_rms_norm_torch(x, weight, eps)


def rotary(qk: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate qk [T, heads, D] in place by the RotaryTable rows cos/sin [max_pos, D] at `positions`."""
    if (
        _native_fits(qk, qk, cos)
        and qk.dim() == 3
        and positions.dtype == torch.long
        and sin.dtype == torch.float32
        and cos.is_contiguous()
        and sin.is_contiguous()
    ):
        ops().rotary(qk, positions.contiguous(), cos, sin)
        return
    rotary_torch(qk, positions, cos, sin)


def silu_mul(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(gate) * up for gate_up [T, 2I] = [gate | up]; returns out [T, I]."""
    if out is None:
        out = torch.empty(gate_up.shape[0], gate_up.shape[1] // 2, dtype=gate_up.dtype, device=gate_up.device)
    if _native_fits(gate_up, out, gate_up) and gate_up.dim() == 2:
        ops().silu_mul(gate_up, out)
        return out
    return silu_mul_torch(gate_up, out)


def gelu_tanh_mul(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """gelu_tanh(gate) * up for gate_up [T, 2I] = [gate | up] (gemma's GeGLU); returns out [T, I]."""
    if out is None:
        out = torch.empty(gate_up.shape[0], gate_up.shape[1] // 2, dtype=gate_up.dtype, device=gate_up.device)
    if _native_fits(gate_up, out, gate_up) and gate_up.dim() == 2:
        ops().gelu_tanh_mul(gate_up, out)
        return out
    return gelu_tanh_mul_torch(gate_up, out)


def _native_fits(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        a.device.type == "cpu"
        and a.dtype == b.dtype == weight.dtype == torch.float32
        and a.stride(-1) == 1
        and b.stride(-1) == 1
        and weight.is_contiguous()
        and native() is not None
    )


# ---- the pure-torch twins (what astrai.model.layers computes) ----


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm exactly as astrai.model.layers.RMSNorm: normalise in float32, scale in x's dtype."""
    normed = x.float()
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    result = weight * normed.to(x.dtype)
    if out is None:
        return result
    out.copy_(result)
    return out


def add_rms_norm_torch(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    residual.add_(x)
    x.copy_(rms_norm_torch(residual, weight, eps))


def head_rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    x.copy_(rms_norm_torch(x, weight, eps))


def rotary_torch(qk: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    qk.copy_(apply_rotary(qk, cos[positions].to(qk.dtype)[:, None, :], sin[positions].to(qk.dtype)[:, None, :]))


def silu_mul_torch(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    result = F.silu(gate) * up
    if out is None:
        return result
    out.copy_(result)
    return out


def gelu_tanh_mul_torch(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    result = F.gelu(gate, approximate="tanh") * up
    if out is None:
        return result
    out.copy_(result)
    return out


__all__ = [
    "add_rms_norm",
    "add_rms_norm_torch",
    "gelu_tanh_mul",
    "gelu_tanh_mul_torch",
    "head_rms_norm",
    "head_rms_norm_torch",
    "rms_norm",
    "rms_norm_torch",
    "rotary",
    "rotary_torch",
    "silu_mul",
    "silu_mul_torch",
]

