"""Rotary position embeddings in the rotate-half layout, with linear and llama3 scaling.

cos/sin are kept in one float32 table indexed by position, so a forward step looks them up
once and every layer reuses them (a model whose layers use two RoPE bases, like Gemma 3's local
and global layers, keeps one table per base).

Llama 3.x GGUFs carry llama3 scaling as per-pair divisors (`rope_freqs.weight`, computed by
llama.cpp's converter from the same `rope_scaling` parameters): inv_freq[i] / factors[i] equals
transformers' llama3 frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_type(scaling: dict[str, Any] | None) -> str:
    """The scaling type named by an HF-style `rope_scaling` dict ("default" if none)."""
    if not scaling:
        return "default"
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def inverse_frequencies(
    head_dim: int, theta: float, scaling: dict[str, Any] | None, freq_factors: Sequence[float] | None = None
) -> torch.Tensor:
    """Per-pair rotation frequencies [head_dim/2] in float32, after any scaling."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if freq_factors is not None:
        inv_freq = inv_freq / torch.tensor(list(freq_factors), dtype=torch.float32)
    kind = rope_type(scaling)
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    raise ValueError(f"unsupported rope_scaling type {kind!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


class RotaryTable:
    """cos/sin for positions [0, n), grown on demand; lookup by position ids."""

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict[str, Any] | None,
        device: torch.device,
        freq_factors: Sequence[float] | None = None,
    ) -> None:
        self.inv_freq = inverse_frequencies(head_dim, theta, scaling, freq_factors).to(device)
        self.cos = torch.empty(0, head_dim, device=device)
        self.sin = torch.empty(0, head_dim, device=device)

    def _grow(self, length: int) -> None:
        length = max(length, 2 * self.cos.shape[0], 256)
        positions = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = angles.cos(), angles.sin()

    def tables(self, max_position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole float32 cos/sin tables [n, head_dim], covering positions up to max_position."""
        if max_position >= self.cos.shape[0]:
            self._grow(max_position + 1)
        return self.cos, self.sin

    def lookup(self, positions: torch.Tensor, max_position: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, 1, head_dim] in `dtype` for the given positions."""
        if self.inv_freq.device != positions.device:  # the model was moved with .to(device)
            self.inv_freq = self.inv_freq.to(positions.device)
            self.cos, self.sin = self.cos[:0].to(positions.device), self.sin[:0].to(positions.device)
        if max_position >= self.cos.shape[0]:
            self._grow(max_position + 1)
        return self.cos[positions].to(dtype)[:, None, :], self.sin[positions].to(dtype)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [T, heads, head_dim] by the per-token angles (rotate-half layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
