"""Linear layers over weights kept in their GGUF quantization.

Served natively: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q3_K, Q4_K, Q5_K, Q6_K, so the
common Q4_K_M / Q5_K_M / Q6_K / Q3_K_M files run without a dequantized copy. A weight is repacked
once at load (`pack_gguf`, the native packer) into the layout `csrc/packed_layout.h` defines:
the file's own bits regrouped so that 8 output rows x 4 consecutive weights load as one vector,
scales apart from the codes, N padded with zero rows to a multiple of 8. Packed weights exist
only where the native kernels do: elsewhere the loader dequantizes (see `quantization`).

Every type is, per row and block of 32 weights, integer codes q, a scale s per 32 (per 16 for
Q6_K / Q3_K), an integer offset o and, for the types with a min, an additive m per block:
w = s * (q - o) + m, exactly as `gguf` dequantizes it. The kernels' arithmetic (every M, every
thread count, every instruction-set variant; `linear_reference_exact` emulates it): each
activation row is quantized per block of 32 in two int8 parts, ~15 bits together (one int8 part,
as llama.cpp's Q8_1, moved the bundled 135M model's logits by ~4% and changed greedy answers):
d_hi = amax/127, q_hi = round-half-even(x/d_hi), r = fma(-q_hi, d_hi, x), d = d_hi/254,
q_lo = round-half-even(r/d), both clamped to [-127, 127] (blocks with amax < 2^-110 are zero),
so x ~ d * a with a = 254*q_hi + q_lo. Per output, in fp32, for each block and each of its
scale spans in order: i = q . a - o * sum(a) (exact int32), main = fma(float(i), s * d, main);
then for the min types low = fma(m, d * sum(a), low) over the blocks; y = main + low + bias. The
result of a row never depends on the other rows in the batch.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import kernels as chosen_kernels
from . import native, native_unavailable_reason, ops

BLOCK = 32  # weights per quantization block (and per activation scale)
GROUP = 8  # output rows interleaved per group
SUPER_BLOCK = 256  # weights per K-quant super-block


class QuantType(enum.IntEnum):
    """GGUF block quantizations served natively; the values are the GGML type ids."""

    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14

    @property
    def block_weights(self) -> int:
        """Weights per GGUF block (in_features must be a multiple of it)."""
        return SUPER_BLOCK if self.name.endswith("_K") else BLOCK

    @property
    def block_bytes(self) -> int:
        """Bytes of one GGUF block."""
        return _BLOCK_BYTES[self]

    @property
    def offset(self) -> int:
        """o in w = s * (q - o) + m."""
        return {QuantType.Q4_0: 8, QuantType.Q5_0: 16, QuantType.Q6_K: 32, QuantType.Q3_K: 4}.get(self, 0)

    @property
    def has_min(self) -> bool:
        return self in (QuantType.Q4_1, QuantType.Q5_1, QuantType.Q4_K, QuantType.Q5_K)

    @property
    def half_block_scales(self) -> bool:
        """Scales per 16 weights (Q6_K, Q3_K) rather than per 32."""
        return self in (QuantType.Q6_K, QuantType.Q3_K)


_BLOCK_BYTES = {
    QuantType.Q4_0: 18, QuantType.Q4_1: 20, QuantType.Q5_0: 22, QuantType.Q5_1: 24, QuantType.Q8_0: 34,
    QuantType.Q3_K: 110, QuantType.Q4_K: 144, QuantType.Q5_K: 176, QuantType.Q6_K: 210,
}


@dataclass(frozen=True)
class PackedWeight:
    """A [out_features, in_features] weight in the packed layout (`csrc/packed_layout.h`)."""

    qtype: QuantType
    out_features: int
    in_features: int
    data: torch.Tensor  # uint8 [packed_nbytes(...)]

    @property
    def nbytes(self) -> int:
        """Resident bytes: the GGUF's bytes regrouped, the zero rows padding N to a multiple of 8, and
        for Q3_K / Q4_K / Q5_K 4 more bytes per super-block per row (their 6-bit scales held as bytes)."""
        return self.data.numel()

    @property
    def groups(self) -> int:
        return -(-self.out_features // GROUP)


def _require_native(what: str) -> None:
    if native() is None:
        raise RuntimeError(f"{what}: packed low-bit weights need the native kernels "
                           f"({native_unavailable_reason()})")


def packed_nbytes(qtype: QuantType, out_features: int, in_features: int) -> int:
    """Bytes of a packed [out_features, in_features] weight (the layout's own count)."""
    _require_native("packed_nbytes")
    return int(ops().qlinear_packed_nbytes(int(qtype), out_features, in_features))


def gguf_nbytes(qtype: QuantType, out_features: int, in_features: int) -> int:
    """Bytes of the same weight in the GGUF file."""
    return out_features * (in_features // qtype.block_weights) * qtype.block_bytes


def pack_gguf(raw_rows: torch.Tensor | np.ndarray, qtype: QuantType | int, in_features: int) -> PackedWeight:
    """Repack GGUF block rows `[N, (K / block weights) * block bytes]` (uint8) for the kernels.

    Rows may come from several GGUF tensors of the same type and K, concatenated (fused q/k/v,
    gate/up), and be permuted, all on the raw rows before packing.
    """
    try:
        qtype = QuantType(qtype)
    except ValueError:
        raise ValueError(f"pack_gguf: GGML type {qtype} is not served natively "
                         f"(served: {', '.join(t.name for t in QuantType)})") from None
    raw = _as_uint8_tensor(raw_rows)
    if in_features <= 0 or in_features % qtype.block_weights:
        raise ValueError(f"pack_gguf: in_features must be a positive multiple of {qtype.block_weights} for "
                         f"{qtype.name}, got {in_features}")
    row_bytes = in_features // qtype.block_weights * qtype.block_bytes
    if raw.dim() != 2 or raw.shape[0] == 0 or raw.shape[1] != row_bytes:
        raise ValueError(f"pack_gguf: {qtype.name} rows of {in_features} weights need shape [N, {row_bytes}] uint8, "
                         f"got {list(raw.shape)}")
    _require_native("pack_gguf")
    if raw.stride(1) != 1:
        raw = raw.contiguous()
    data = ops().pack_gguf(raw, int(qtype), in_features)
    return PackedWeight(qtype, raw.shape[0], in_features, data)


def dequantize(w: PackedWeight) -> torch.Tensor:
    """fp32 [N, K], bit-identical to `gguf.quants.dequantize` of the original rows."""
    _check_packed(w)
    return ops().qlinear_dequantize(w.data, int(w.qtype), w.out_features, w.in_features)


def weight_components(w: PackedWeight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the kernels compute with: codes q int16 [N, K], the scale of every 16 weights
    s float32 [N, K/16] (a 32-weight span repeats its scale), the min m float32 [N, K/32]
    (zeros for types without one); w = s * (q - offset) + m. Read back by a test-only operator."""
    _check_packed(w)
    chosen = chosen_kernels()
    if chosen is None:
        raise RuntimeError("weight_components needs the native kernels")
    q, s, m = chosen.testing_ops().packed_components(w.data, int(w.qtype), w.out_features, w.in_features)
    return q, s, m


def linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + bias for fp32 x [..., K] through the native kernel."""
    _check_inputs(x, w, bias)
    rows = x.reshape(-1, w.in_features)
    y = ops().qlinear(rows, w.data, int(w.qtype), w.out_features, w.in_features, bias)
    return y.reshape(*x.shape[:-1], w.out_features)


TINY_BLOCK = 2.0**-110  # activation blocks with a smaller amax are zero (keeps 1/d finite, d normal)


def quantize_activations_reference(x: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch twin of the kernel's two-part activation quantization (module docstring), bit for bit:
    (q_hi int8 [M, K], q_lo int8 [M, K], d, d*sum, sum [M, K/32], sum16 [M, K/16]) with
    x ~ d * (254*q_hi + q_lo)."""
    blocks = x.reshape(x.shape[0], -1, BLOCK)
    amax = blocks.abs().amax(dim=-1)
    live = amax >= TINY_BLOCK
    d_hi = torch.where(live, amax / 127.0, torch.zeros_like(amax))
    d = d_hi / 254.0
    inverse_hi = torch.where(live, 1.0 / d_hi, torch.zeros_like(d_hi))[..., None]
    inverse_lo = torch.where(live, 1.0 / d, torch.zeros_like(d))[..., None]
    q_hi = torch.round(blocks * inverse_hi).clamp(-127, 127)
    # The kernel's fma(-q_hi, d_hi, x): exact in float64 (a 32-bit span at most), rounded once.
    residual = (blocks.double() - q_hi.double() * d_hi.double()[..., None]).float()
    q_lo = torch.round(residual * inverse_lo).clamp(-127, 127)
    whole = 254 * q_hi.to(torch.int32) + q_lo.to(torch.int32)
    sum16 = whole.reshape(x.shape[0], -1, 16).sum(dim=-1, dtype=torch.int32)
    total = sum16.reshape(x.shape[0], -1, 2).sum(dim=-1, dtype=torch.int32)
    return (q_hi.to(torch.int8).reshape(x.shape), q_lo.to(torch.int8).reshape(x.shape), d, d * total.float(), total,
            sum16)


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """fp32 fma emulated in float64: exact product and sum, rounded once (but for a rare double rounding)."""
    return (a.double() * b.double() + c.double()).float()


def linear_reference_exact(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Pure-torch emulation of the native kernel's exact arithmetic (see the module docstring)."""
    _check_inputs(x, w, bias)
    rows = x.reshape(-1, w.in_features)
    q_hi, q_lo, d, ds, total, sum16 = quantize_activations_reference(rows)
    codes, scales16, mins = weight_components(w)
    span = 16 if w.qtype.half_block_scales else BLOCK
    spans = w.in_features // span
    m_rows = rows.shape[0]
    a = (254 * q_hi.to(torch.int64) + q_lo.to(torch.int64)).double().reshape(m_rows, spans, span)
    q = codes.double().reshape(w.out_features, spans, span)
    dots = torch.einsum("msk,nsk->smn", a, q).round().to(torch.int64)  # exact: |dot| < 2**31
    sums = (sum16 if span == 16 else total).to(torch.int64).T[:, :, None]  # [spans, M, 1]
    integers = (dots - w.qtype.offset * sums).float()  # int -> fp32 rounds half-even, as cvtepi32_ps
    scale = scales16 if span == 16 else scales16[:, ::2]  # [N, spans]
    per_span_d = d if span == BLOCK else d.repeat_interleave(2, dim=1)  # [M, spans]
    main = torch.zeros(m_rows, w.out_features, dtype=torch.float32)
    for s in range(spans):
        main = _fma(integers[s], per_span_d[:, s, None] * scale[None, :, s], main)  # the scale product in fp32
    y = main
    if w.qtype.has_min:
        low = torch.zeros_like(main)
        for b in range(w.in_features // BLOCK):
            low = _fma(mins[None, :, b], ds[:, b, None], low)
        y = main + low
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], w.out_features)


def _as_uint8_tensor(raw: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(raw, np.ndarray):
        with warnings.catch_warnings():  # a read-only memory map: we only read it
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(raw)
    if not isinstance(raw, torch.Tensor) or raw.dtype != torch.uint8:
        raise TypeError(f"pack_gguf: raw rows must be a uint8 tensor or array, got {getattr(raw, 'dtype', type(raw))}")
    return raw


def _check_packed(w: PackedWeight) -> None:
    expected = packed_nbytes(w.qtype, w.out_features, w.in_features)
    if w.data.dtype != torch.uint8 or w.data.dim() != 1 or w.data.numel() != expected:
        raise ValueError(f"PackedWeight data must be a 1-D uint8 tensor of {expected} bytes for {w.qtype.name} "
                         f"[{w.out_features}, {w.in_features}], got {w.data.dtype} {list(w.data.shape)}")


def _check_inputs(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None) -> None:
    """Clear errors before the kernel's own checks."""
    _check_packed(w)
    if x.dtype != torch.float32:
        raise TypeError(f"quantized linear: x must be float32, got {x.dtype}")
    if x.device.type != "cpu":
        raise ValueError(f"quantized linear: x must be on the CPU, got {x.device}")
    if x.dim() < 1 or x.shape[-1] != w.in_features:
        raise ValueError(f"quantized linear: x has shape {list(x.shape)}, the weight expects [..., {w.in_features}]")
    if not x.is_contiguous():
        raise ValueError("quantized linear: x must be contiguous (call .contiguous() first)")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (w.out_features,) or not bias.is_contiguous()):
        raise ValueError(f"quantized linear: bias must be a contiguous float32 [{w.out_features}] tensor, "
                         f"got {bias.dtype} {list(bias.shape)}")


__all__ = [
    "BLOCK", "GROUP", "PackedWeight", "QuantType", "SUPER_BLOCK", "dequantize", "gguf_nbytes", "linear",
    "linear_reference_exact", "pack_gguf", "packed_nbytes", "quantize_activations_reference", "weight_components",
]
