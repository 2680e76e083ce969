"""Layers whose weights stay in their GGUF block quantization (`kernels.quant.QuantType`).

A GGUF model runs as its own quantization by default: the loader packs each projection's raw
blocks once (`kernels.quant.pack_gguf`) and puts these modules where the dense `nn.Linear` /
`nn.Embedding` would be. The native fused forward reads their packed weights directly; these
modules' own `forward` is the per-op path (tests, debugging) and is exact to the same kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .kernels import native, ops
from .kernels.quant import PackedWeight, QuantType, dequantize, linear


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W packed low-bit; float32 activations in and out.

    W is one packed weight, or several stacked along the outputs (`parts`): a fused projection
    whose GGUF tensors have different block types (Q4_K q/k with a Q6_K v) keeps each part in
    its own type, and every output is computed exactly as by that part alone."""

    def __init__(self, weight: PackedWeight | Sequence[PackedWeight], bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.parts: tuple[PackedWeight, ...] = (weight,) if isinstance(weight, PackedWeight) else tuple(weight)
        if not self.parts or len({p.in_features for p in self.parts}) != 1:
            raise ValueError("QuantizedLinear needs one or more packed parts with the same in_features")
        self.in_features = self.parts[0].in_features
        self.out_features = sum(p.out_features for p in self.parts)
        self.bias = None if bias is None else nn.Parameter(bias.float().contiguous(), requires_grad=False)

    @property
    def qtypes(self) -> tuple[QuantType, ...]:
        return tuple(p.qtype for p in self.parts)

    def part_biases(self) -> list[torch.Tensor | None]:
        """The bias split along the parts' outputs (None for each where there is no bias)."""
        if self.bias is None:
            return [None] * len(self.parts)
        return list(self.bias.detach().split([p.out_features for p in self.parts]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        outputs = [linear(x, part, bias) for part, bias in zip(self.parts, self.part_biases(), strict=True)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        types = "+".join(q.name for q in self.qtypes)
        return f"{types}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """Token-table lookup over a packed weight (the same packed rows can serve a tied LM head)."""

    def __init__(self, weight: PackedWeight) -> None:
        super().__init__()
        self.weight_packed = weight
        self.num_embeddings, self.embedding_dim = weight.out_features, weight.in_features

    @property
    def qtypes(self) -> tuple[QuantType, ...]:
        return (self.weight_packed.qtype,)

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
