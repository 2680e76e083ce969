"""GGUF block rows for the kernel tests: an independent decoder and realistic generators.

`decode` splits GGUF block rows into what every served type is made of: integer codes q, a scale
s per 16 weights and an additive min m per 32, with w = s * (q - OFFSET[type]) + m. It follows
the byte layouts of the `gguf` package's own dequantizers (gguf/quants.py), never AstrAI's C++
packer, so it checks the packer from outside; `reconstruct(decode(raw))` must equal
`gguf.quants.dequantize(raw)` bit for bit (the tests check that too).

Generators: `quantizer_rows` are made by gguf's own quantizer where gguf has one (Q4_0, Q4_1,
Q5_0, Q5_1, Q8_0; the K-quants are dequantize-only in gguf), `random_rows` are arbitrary valid
blocks: random code bytes (every code value occurs) with finite fp16 scale fields of both signs,
some zero or subnormal.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quantize

T = GGMLQuantizationType
SERVED = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)
K_TYPES = (T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)
QUANTIZABLE = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0)  # gguf implements quantize_blocks for these
# w = s * (q - OFFSET) + m, with q >= 0 (but for Q8_0's int8 codes)
OFFSET = {T.Q4_0: 8, T.Q4_1: 0, T.Q5_0: 16, T.Q5_1: 0, T.Q8_0: 0, T.Q3_K: 4, T.Q4_K: 0, T.Q5_K: 0, T.Q6_K: 32}
MAX_CODE = {T.Q4_0: 15, T.Q4_1: 15, T.Q5_0: 31, T.Q5_1: 31, T.Q8_0: 127, T.Q3_K: 7, T.Q4_K: 15, T.Q5_K: 31,
            T.Q6_K: 63}
# (byte offset in the block, what) of every fp16 field
FP16_FIELDS = {
    T.Q4_0: ((0, "d"),), T.Q5_0: ((0, "d"),), T.Q8_0: ((0, "d"),),
    T.Q4_1: ((0, "d"), (2, "m")), T.Q5_1: ((0, "d"), (2, "m")),
    T.Q4_K: ((0, "d"), (2, "dmin")), T.Q5_K: ((0, "d"), (2, "dmin")),
    T.Q6_K: ((208, "d"),), T.Q3_K: ((108, "d"),),
}


def block_shape(qtype: T) -> tuple[int, int]:
    """(weights, bytes) per block."""
    return GGML_QUANT_SIZES[qtype]


def row_bytes(qtype: T, k: int) -> int:
    weights, size = block_shape(qtype)
    return k // weights * size


def _f16(field: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 -> float32 [...]."""
    return np.ascontiguousarray(field).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray, run: int) -> np.ndarray:
    """[..., bytes] -> [..., 2 * bytes]: each run of `run` bytes gives its low nibbles, then its high ones."""
    grouped = qs.reshape(*qs.shape[:-1], -1, 1, run) >> np.array([0, 4], dtype=np.uint8).reshape(2, 1)
    return (grouped & 0x0F).reshape(*qs.shape[:-1], -1)


def _bits(packed: np.ndarray, width: int, count: int) -> np.ndarray:
    """[..., bytes] -> [..., count, bytes]: field i (bits width*i ..) of every byte."""
    shifts = (np.arange(count, dtype=np.uint8) * width).reshape(count, 1)
    return (packed[..., None, :] >> shifts) & ((1 << width) - 1)


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: 12 bytes -> the 8 blocks' 6-bit scales and mins (gguf's get_scale_min)."""
    d, m, m_d = scales[..., 0:4], scales[..., 4:8], scales[..., 8:12]
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def decode(raw: np.ndarray, qtype: T, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GGUF rows uint8 [N, row_bytes] -> (codes int16 [N, K], s float32 [N, K/16], m float32 [N, K/32])."""
    qtype = T(qtype)
    n = raw.shape[0]
    weights, size = block_shape(qtype)
    b = raw.reshape(n, k // weights, size)
    if qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        d = _f16(b[..., 0:2])
        has_min = qtype in (T.Q4_1, T.Q5_1)
        m = _f16(b[..., 2:4]) if has_min else np.zeros_like(d)
        head = 4 if has_min else 2
        if qtype is T.Q8_0:
            codes = b[..., 2:].view(np.int8).astype(np.int16)
        elif qtype in (T.Q4_0, T.Q4_1):
            codes = _nibbles(b[..., head:], 16).astype(np.int16)
        else:  # qh: bit i of the little-endian uint32 is weight i's fifth bit
            qh = np.ascontiguousarray(b[..., head : head + 4]).view(np.uint32)
            high = (qh >> np.arange(32, dtype=np.uint32)) & 1
            codes = (_nibbles(b[..., head + 4 :], 16) | (high.astype(np.uint8) << 4)).astype(np.int16)
        scales = np.repeat(d, 2, axis=-1)  # one scale per 32: both 16-weight spans
        return codes.reshape(n, k), scales.reshape(n, k // 16), m.reshape(n, k // 32)
    if qtype in (T.Q4_K, T.Q5_K):  # d, dmin, scales[12], (qh[32],) qs[128]
        d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
        sc, mn = _k_scale_min(b[..., 4:16])
        qs = b[..., 16:] if qtype is T.Q4_K else b[..., 48:]
        codes = _nibbles(qs, 32).reshape(n, -1, 8, 32)  # the 8 blocks of 32 of a super-block
        if qtype is T.Q5_K:
            codes = codes | (_bits(b[..., 16:48], 1, 8) << 4)  # bit j of qh[i]: block j, weight i
        scales = d * sc.astype(np.float32)
        mins = -(dmin * mn.astype(np.float32))
        return (codes.astype(np.int16).reshape(n, k), np.repeat(scales, 2, axis=-1).reshape(n, k // 16),
                mins.reshape(n, k // 32))
    if qtype is T.Q6_K:  # ql[128], qh[64], int8 scales[16], d
        d = _f16(b[..., 208:210])[..., None]
        low = _nibbles(b[..., 0:128], 64).reshape(n, -1, 2, 128)  # per 128-weight half
        high = _bits(b[..., 128:192].reshape(n, -1, 2, 32), 2, 4).reshape(n, -1, 2, 128)
        codes = (low | (high << 4)).astype(np.int16)
        scales = d * b[..., 192:208].view(np.int8).astype(np.float32)
        return codes.reshape(n, k), scales.reshape(n, k // 16), np.zeros((n, k // 32), np.float32)
    # Q3_K: hmask[32], qs[64], scales[12], d
    d = _f16(b[..., 108:110])[..., None]
    low = _bits(b[..., 32:96].reshape(n, -1, 2, 32), 2, 4).reshape(n, -1, 256)
    high = _bits(b[..., 0:32], 1, 8).reshape(n, -1, 256)  # bit j of hmask[i]: weight 32 j + i
    codes = (low | (high << 2)).astype(np.int16)  # gguf: low - 4 * (1 - high) = code - 4
    lscales = _bits(b[..., 96:104], 4, 2).reshape(n, -1, 16)
    hscales = _bits(b[..., 104:108], 2, 4).reshape(n, -1, 16)
    scales = d * ((lscales | (hscales << 4)).astype(np.int16) - 32).astype(np.float32)
    return codes.reshape(n, k), scales.reshape(n, k // 16), np.zeros((n, k // 32), np.float32)


def reconstruct(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray, qtype: T) -> np.ndarray:
    """w = s * (q - offset) + m in float32, as gguf computes it (one rounding per operation)."""
    n, k = codes.shape
    w = np.repeat(scales, 16, axis=-1) * (codes.astype(np.int32) - OFFSET[T(qtype)]).astype(np.float32)
    if T(qtype) in (T.Q4_1, T.Q5_1, T.Q4_K, T.Q5_K):
        w = w + np.repeat(mins, 32, axis=-1)
    return w.reshape(n, k)


def _fp16_fields(rng: np.random.Generator, shape: tuple[int, ...], magnitude: float) -> np.ndarray:
    """fp16 values of both signs around `magnitude`, with zeros, a negative zero and subnormals
    sprinkled in; uint8 [..., 2]."""
    values = rng.uniform(0.25, 1.0, size=shape) * magnitude * rng.choice([-1.0, 1.0], size=shape)
    flat = values.reshape(-1)
    specials = np.array([0.0, -0.0, 6e-8, -3e-6, 2e-5], dtype=np.float64)  # 6e-8 .. 2e-5: fp16 subnormals
    if flat.size >= 8 * len(specials):  # never so many that a small weight is mostly special
        flat[rng.choice(flat.size, size=len(specials), replace=False)] = specials
    return np.ascontiguousarray(values.astype(np.float16)).view(np.uint8).reshape(*shape, 2)


# Typical |d| per type: weights of order 0.01 - 0.1 (K types: d times 6-bit or int8 block scales).
_MAGNITUDE = {T.Q4_0: 0.01, T.Q4_1: 0.01, T.Q5_0: 0.005, T.Q5_1: 0.005, T.Q8_0: 0.001, T.Q3_K: 0.002,
              T.Q4_K: 0.002, T.Q5_K: 0.001, T.Q6_K: 0.0005}


def random_rows(qtype: T, n: int, k: int, seed: int) -> np.ndarray:
    """Arbitrary valid GGUF rows uint8 [N, row_bytes]: random bytes, sane fp16 fields."""
    qtype = T(qtype)
    rng = np.random.default_rng(seed)
    weights, size = block_shape(qtype)
    blocks = rng.integers(0, 256, size=(n, k // weights, size), dtype=np.uint8)
    for offset, what in FP16_FIELDS[qtype]:
        magnitude = _MAGNITUDE[qtype] * (8.0 if what == "m" else 1.0)  # a block's min ~ 8 steps
        blocks[..., offset : offset + 2] = _fp16_fields(rng, (n, k // weights), magnitude)
    return blocks.reshape(n, row_bytes(qtype, k))


def saturated_rows(qtype: T, n: int, k: int, seed: int) -> np.ndarray:
    """`random_rows` with every byte but the fp16 fields 0xFF: every code at its maximum (the
    integer dot products' worst case), every 6-bit block scale and min at 63; Q8_0's codes all
    -128 (its largest magnitude)."""
    raw = random_rows(qtype, n, k, seed)
    weights, size = block_shape(T(qtype))
    blocks = raw.reshape(n, k // weights, size)
    keep = np.zeros(size, dtype=bool)
    for offset, _ in FP16_FIELDS[T(qtype)]:
        keep[offset : offset + 2] = True
    blocks[..., ~keep] = 0x80 if T(qtype) is T.Q8_0 else 0xFF
    return raw


def quantizer_rows(qtype: T, n: int, k: int, seed: int) -> np.ndarray:
    """Rows as real files have them: gguf's quantizer on a normal weight with a few outlier
    columns where gguf can quantize the type, `random_rows` for the K types."""
    qtype = T(qtype)
    if qtype not in QUANTIZABLE:
        return random_rows(qtype, n, k, seed)
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    weight[:, rng.integers(0, k, size=max(1, k // 64))] *= 8.0
    return quantize(weight, qtype)
