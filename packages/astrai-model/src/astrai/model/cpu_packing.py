"""Optional bf16 CPU speed-up: pre-pack linear weights once for oneDNN (AMX) matmuls.

A plain bf16 `F.linear` on CPU re-lays out its weight for oneDNN on every call; for a decode
step (a few rows) that re-layout dominates. Packing once, as torch's own CPU compiler does,
made SmolLM2's LM head ~3.7x faster for one row on this machine. It uses torch's mkldnn ops,
so it is opt-in (`Transformer.pack_for_cpu()`), verified against `F.linear` before use, and
skipped wherever those ops are missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    """bf16 on a CPU whose oneDNN build has fast bf16 (AVX512-BF16 / AMX)."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_bf16_cpu() -> bool:
    """Whether this CPU runs bfloat16 matmuls fast (AVX512-BF16 / AMX through oneDNN)."""
    return packing_supported(torch.bfloat16, torch.device("cpu"))


class PackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's packed layout (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear | None:
    """A PackedLinear that provably matches F.linear on a probe input, or None."""
    try:
        packed = PackedLinear(weight, bias)
        probe = torch.randn(3, weight.shape[1], dtype=weight.dtype, generator=torch.Generator().manual_seed(0))
        expected = F.linear(probe, weight, bias).float()
        got = packed(probe).float()
    except (RuntimeError, AttributeError):
        return None
    tolerance = 1e-2 * float(expected.abs().max()) + 1e-3
    return packed if float((got - expected).abs().max()) <= tolerance else None
