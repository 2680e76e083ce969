"""Exact widening of symmetric 32-weight GGUF blocks (Q4_0, Q5_0) to Q8_0.

A fused projection is one packed weight of one block type, but files mix types inside one: a
Q4_K_M file keeps `attn_v` in Q8_0 in half of the layers while q and k are Q5_0. Q4_0 and Q5_0
blocks are w = d * (q - o) with the fp16 scale d and integer codes q - o in [-8, 7] / [-16, 15],
so the same d and q - o as int8 make a Q8_0 block of exactly the same weights: the projection is
then served packed as Q8_0 (1.06 bytes per weight) instead of dequantized to float32 (4 bytes).
"""

from __future__ import annotations

import numpy as np
import torch

from .quant import BLOCK, QuantType

# Block types whose weights Q8_0 holds exactly (same fp16 scale per 32 weights, small integer codes).
WIDENS_TO_Q8_0 = frozenset({QuantType.Q4_0, QuantType.Q5_0, QuantType.Q8_0})


def widen_to_q8_0(raw_rows: torch.Tensor, qtype: QuantType) -> torch.Tensor:
    """GGUF block rows [N, K/32 * block bytes] (uint8) of `qtype` as Q8_0 block rows [N, K/32 * 34]."""
    if qtype not in WIDENS_TO_Q8_0:
        raise ValueError(f"widen_to_q8_0: {qtype.name} blocks are not exactly representable in Q8_0 "
                         f"(exact: {', '.join(sorted(t.name for t in WIDENS_TO_Q8_0))})")
    if qtype == QuantType.Q8_0:
        return raw_rows
    rows = raw_rows.shape[0]
    blocks = raw_rows.numpy().reshape(rows, -1, qtype.block_bytes)
    scale = blocks[..., :2]  # fp16 d, kept as its two bytes
    nibbles = blocks[..., -BLOCK // 2:]  # byte j: weight j (low nibble), weight j + 16 (high nibble)
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.int16)
    if qtype == QuantType.Q5_0:
        high = blocks[..., 2:6].copy().view("<u4")  # bit j: the fifth bit of weight j
        bits = (high >> np.arange(BLOCK, dtype=np.uint32)) & 1
        codes |= (bits.astype(np.int16) << 4)
    values = (codes - qtype.offset).astype(np.int8)
    out = np.concatenate([scale, values.view(np.uint8)], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out.reshape(rows, -1)))
