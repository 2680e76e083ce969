"""Layers whose weights stay in their GGUF block quantization (`kernels.quant.QuantType`).

A GGUF model runs as its own quantization by default: the loader packs each projection's raw
blocks once (`kernels.quant.pack_gguf`) and puts these modules where the dense `nn.Linear` /
`nn.Embedding` would be. The native fused forward reads their packed weights directly; these
modules' own `forward` is the per-op path (tests, debugging) and is exact to the same kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from .kernels import native, ops
from .kernels.quant import PackedWeight, dequantize, linear


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W packed low-bit; float32 activations in and out."""

    def __init__(self, weight: PackedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight_packed = weight
        self.in_features, self.out_features = weight.in_features, weight.out_features
        self.bias = None if bias is None else nn.Parameter(bias.float().contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x.float().contiguous(), self.weight_packed, self.bias)

    def extra_repr(self) -> str:
        w = self.weight_packed
        return f"{w.qtype.name}, in_features={w.in_features}, out_features={w.out_features}, bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """Token-table lookup over a packed weight (the same packed rows can serve a tied LM head)."""

    def __init__(self, weight: PackedWeight) -> None:
        super().__init__()
        self.weight_packed = weight
        self.num_embeddings, self.embedding_dim = weight.out_features, weight.in_features

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return embedding_rows(self.weight_packed, token_ids)

    def extra_repr(self) -> str:
        w = self.weight_packed
        return f"{w.qtype.name}, {w.out_features}, {w.in_features}"


def embedding_rows(weight: PackedWeight, token_ids: torch.Tensor) -> torch.Tensor:
    """Rows `token_ids` of a packed [N, K] weight as float32 [T, K]."""
    ids = token_ids.reshape(-1).long()
    module = native()
    if module is not None:
        rows = ops().embedding_rows_packed(
            weight.data, int(weight.qtype), weight.out_features, weight.in_features, ids)
    else:  # pure torch: dequantize the table (slow; this path is for tests and odd machines)
        rows = dequantize(weight)[ids]
    return rows.view(*token_ids.shape, weight.in_features)
