"""Linear layers over weights kept in their GGUF quantization (Q4_0, Q4_1, Q8_0).

A weight is repacked once at load (`pack_gguf`) into a layout made for the AVX2 kernels in
`csrc/qlinear.cpp`, holding the same bytes as the GGUF plus zero padding of N to a multiple of 8:

    data = [quants: G x nb x QB bytes][scales: G x nb x SB bytes]      (one uint8 tensor)

G = ceil(N / 8) groups of 8 output rows, nb = K / 32 blocks. In a group-block, the quants are
32-byte chunks whose 32-bit lane r belongs to row r: Q8_0 (QB = 256) chunk j holds row r's
int8 weights k = 4j..4j+3; Q4 (QB = 128) chunk c holds row r's GGUF bytes qs[4c..4c+3], i.e.
weights k = 4c+i in the low nibbles and k = 16+4c+i in the high ones. So one load-and-mask gives
8 rows x 4 k, which multiply a broadcast 4-byte slice of the int8 activations with
`maddubs`: no horizontal sums, and the 8 rows' fp16 scales (SB = 16; Q4_1 adds 8 fp16 mins,
SB = 32) apply in one FMA. Scales sit apart from the quants so those stay 32-byte aligned.

Arithmetic (the native kernel, every M; `linear_reference_exact` emulates it exactly): each
activation row is quantized per block of 32 in two int8 parts, ~15 bits together (one int8 part,
as llama.cpp's Q8_1, moved the bundled 135M model's logits by ~4% and changed greedy answers):
d_hi = amax/127, q_hi = round-half-even(x/d_hi), r = fma(-q_hi, d_hi, x) (|r| <= d_hi/2),
d = d_hi/254, q_lo = round-half-even(r/d), both clamped to [-127, 127] (blocks with amax < 2^-110
are zero), so x ~ d * a with a = 254*q_hi + q_lo, |x - d*a| <= d/2 (~amax/64516) + fp32 rounding. The dot
products are exact integers, i = 254*(w . q_hi) + (w . q_lo) = w . a (int32), and per output, in
fp32: main += float(i) * (dw*d) (FMA; Q4_0: i -= 8*sum(a)), Q4_1: low += mw * (d*sum(a)) (FMA),
y = main + low + bias. The result of a row never depends on the other rows in the batch.

Without the native module, `linear` dequantizes the weight to fp32 on each call and runs
`F.linear` (slow, but exact to the dequantized weight and without a second resident copy).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import native

BLOCK = 32  # weights per quantization block
GROUP = 8  # output rows interleaved per group


class QuantType(enum.IntEnum):
    """GGUF block quantizations served natively; the values are the GGML type ids."""

    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8

    @property
    def block_bytes(self) -> int:
        """Bytes of one GGUF block of 32 weights."""
        return {QuantType.Q4_0: 18, QuantType.Q4_1: 20, QuantType.Q8_0: 34}[self]

    @property
    def quant_bytes(self) -> int:
        """QB: quant bytes of one packed group-block (8 rows x 32 weights)."""
        return 256 if self is QuantType.Q8_0 else 128

    @property
    def scale_bytes(self) -> int:
        """SB: scale bytes of one packed group-block (8 fp16 d, plus 8 fp16 m for Q4_1)."""
        return 32 if self is QuantType.Q4_1 else 16


@dataclass(frozen=True)
class PackedWeight:
    """A [out_features, in_features] weight in the packed layout of this module's docstring."""

    qtype: QuantType
    out_features: int
    in_features: int
    data: torch.Tensor  # uint8 [packed_nbytes(...)]

    @property
    def nbytes(self) -> int:
        """Resident bytes (the GGUF's bytes plus the zero rows padding N to a multiple of 8)."""
        return self.data.numel()

    @property
    def groups(self) -> int:
        return -(-self.out_features // GROUP)


def packed_nbytes(qtype: QuantType, out_features: int, in_features: int) -> int:
    groups = -(-out_features // GROUP)
    return groups * (in_features // BLOCK) * (qtype.quant_bytes + qtype.scale_bytes)


def gguf_nbytes(qtype: QuantType, out_features: int, in_features: int) -> int:
    """Bytes of the same weight in the GGUF file."""
    return out_features * (in_features // BLOCK) * qtype.block_bytes


def pack_gguf(raw_rows: torch.Tensor | np.ndarray, qtype: QuantType | int, in_features: int) -> PackedWeight:
    """Repack GGUF block rows `[N, (K/32) * block_bytes]` (uint8) for the kernels.

    Rows may come from several GGUF tensors of the same type and K, concatenated (fused q/k/v,
    gate/up), and be permuted, all on the raw rows before packing.
    """
    qtype = QuantType(qtype)
    raw = _as_uint8_tensor(raw_rows)
    if in_features <= 0 or in_features % BLOCK:
        raise ValueError(f"pack_gguf: in_features must be a positive multiple of {BLOCK}, got {in_features}")
    nb = in_features // BLOCK
    if raw.dim() != 2 or raw.shape[0] == 0 or raw.shape[1] != nb * qtype.block_bytes:
        raise ValueError(f"pack_gguf: {qtype.name} rows of {in_features} weights need shape [N, "
                         f"{nb * qtype.block_bytes}] uint8, got {list(raw.shape)}")
    n = raw.shape[0]
    groups, full = -(-n // GROUP), n // GROUP
    data = torch.empty(packed_nbytes(qtype, n, in_features), dtype=torch.uint8)
    head = 4 if qtype is QuantType.Q4_1 else 2  # fp16 d (and m) before the quant bytes
    # One strided copy per region straight into place: [G, r, b, unit] -> [G, b, unit, r].
    quants = data[: groups * nb * qtype.quant_bytes].view(groups, nb, qtype.quant_bytes // 32, GROUP, 4)
    scales = data[groups * nb * qtype.quant_bytes :].view(groups, nb, head // 2, GROUP, 2)

    def place(rows: torch.Tensor, first: int, count: int) -> None:
        blocks = rows.reshape(count, GROUP, nb, qtype.block_bytes)  # a view unless rows are strided
        quants[first : first + count].copy_(
            blocks[..., head:].unflatten(-1, (qtype.quant_bytes // 32, 4)).permute(0, 2, 3, 1, 4))
        scales[first : first + count].copy_(blocks[..., :head].unflatten(-1, (head // 2, 2)).permute(0, 2, 3, 1, 4))

    if full:
        place(raw[: full * GROUP], 0, full)
    if groups > full:  # the last group's missing rows are zero
        tail = raw.new_zeros(GROUP, raw.shape[1])
        tail[: n - full * GROUP] = raw[full * GROUP :]
        place(tail, full, 1)
    return PackedWeight(qtype, n, in_features, data)


def weight_integers(w: PackedWeight, dtype: torch.dtype = torch.float32) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The stored integers and scales: (q [N, nb, 32] as `dtype`, d [N, nb] fp32, m [N, nb] fp32 | None).

    q is the raw nibble (0..15) for Q4 types and the int8 value for Q8_0.
    """
    _check_packed(w)
    groups, nb = w.groups, w.in_features // BLOCK
    qb, sb = w.qtype.quant_bytes, w.qtype.scale_bytes
    quants = w.data[: groups * nb * qb]
    q = torch.empty(groups, GROUP, nb, BLOCK, dtype=dtype)
    if w.qtype is QuantType.Q8_0:
        q.view(groups, GROUP, nb, 8, 4).copy_(quants.view(torch.int8).view(groups, nb, 8, GROUP, 4).permute(0, 3, 1, 2, 4))
    else:
        units = quants.view(groups, nb, 4, GROUP, 4).permute(0, 3, 1, 2, 4)  # [G, r, b, c, i]
        halves = q.view(groups, GROUP, nb, 2, 4, 4)
        halves[:, :, :, 0].copy_(units & 0x0F)
        halves[:, :, :, 1].copy_(units >> 4)
    scales = w.data[groups * nb * qb :].view(groups, nb, sb // 16, GROUP, 2)
    fp16 = scales.permute(0, 3, 1, 2, 4).contiguous().view(torch.float16).squeeze(-1).float()  # [G, r, b, 1|2]
    rows = groups * GROUP
    q = q.view(rows, nb, BLOCK)[: w.out_features]
    d = fp16[..., 0].reshape(rows, nb)[: w.out_features]
    m = fp16[..., 1].reshape(rows, nb)[: w.out_features] if w.qtype is QuantType.Q4_1 else None
    return q, d, m


def dequantize(w: PackedWeight) -> torch.Tensor:
    """fp32 [N, K], bit-identical to `gguf.quants.dequantize` of the original rows."""
    q, d, m = weight_integers(w)
    if w.qtype is QuantType.Q4_0:
        q.sub_(8.0)
    q.mul_(d[..., None])
    if m is not None:
        q.add_(m[..., None])
    return q.view(w.out_features, w.in_features)


def linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + bias for fp32 x [..., K]: the native kernel where available, else the
    pure-torch path (dequantize, then F.linear; its results differ from the native ones by the
    ~15-bit quantization of x, ~1e-5 relative)."""
    _check_inputs(x, w, bias)
    rows = x.reshape(-1, w.in_features)
    if native() is not None:
        y = torch.ops.astrai.qlinear(rows, w.data, int(w.qtype), w.out_features, w.in_features, bias)
    else:
        y = F.linear(rows, dequantize(w), bias)
    return y.reshape(*x.shape[:-1], w.out_features)


TINY_BLOCK = 2.0**-110  # activation blocks with a smaller amax are zero (keeps 1/d finite, d normal)


def quantize_activations_reference(x: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch twin of the kernel's two-part activation quantization (module docstring), bit for bit:
    (q_hi int8 [M, K], q_lo int8 [M, K], d, d*sum, sum [M, K/32]) with x ~ d * (254*q_hi + q_lo)."""
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
    total = (254 * q_hi.to(torch.int32) + q_lo.to(torch.int32)).sum(dim=-1, dtype=torch.int32)
    return (q_hi.to(torch.int8).reshape(x.shape), q_lo.to(torch.int8).reshape(x.shape), d, d * total.float(), total)


def linear_reference_exact(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Pure-torch emulation of the native kernel's exact arithmetic (see the module docstring).

    Integer dot products are exact (fp32 sums of integers below 2**24 per part, combined in
    int64); an FMA is emulated as a float64 multiply-add rounded once to fp32 (exact but for a
    rare double rounding).
    """
    _check_inputs(x, w, bias)
    rows = x.reshape(-1, w.in_features)
    q_hi, q_lo, d, ds, total = quantize_activations_reference(rows)
    qw, dw, mw = weight_integers(w)
    nb = w.in_features // BLOCK
    weights = qw.permute(1, 2, 0)  # [nb, 32, N]

    def dots(q: torch.Tensor) -> torch.Tensor:  # [nb, M, N]; fp32 sums of integers below 2**24: exact
        return torch.bmm(q.reshape(rows.shape[0], nb, BLOCK).transpose(0, 1).float(), weights).to(torch.int64)

    combined = 254 * dots(q_hi) + dots(q_lo)
    if w.qtype is QuantType.Q4_0:
        combined -= 8 * total.to(torch.int64).T[:, :, None]
    integers = combined.float()  # int64 -> fp32 rounds half-even, as cvtepi32_ps
    main = torch.zeros(rows.shape[0], w.out_features, dtype=torch.float32)
    low = torch.zeros_like(main)
    for b in range(nb):
        scale = d[:, b, None] * dw[None, :, b]  # fp32 product, as the kernel
        main = (integers[b].double() * scale.double() + main.double()).float()
        if mw is not None:
            low = (ds[:, b, None].double() * mw[None, :, b].double() + low.double()).float()
    y = main + low if mw is not None else main
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
    """The same clear errors on both paths."""
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
    "BLOCK", "GROUP", "PackedWeight", "QuantType", "dequantize", "gguf_nbytes", "linear", "linear_reference_exact",
    "pack_gguf", "packed_nbytes", "quantize_activations_reference", "weight_integers",
]
