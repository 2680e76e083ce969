"""Q4_0 / Q5_0 blocks widened to Q8_0 hold exactly the same weights (gguf's own dequantization is
the reference), and a fused projection mixing them is served packed, through the real kernels."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from astrai.model.kernels.quant import QuantType
from astrai.model.kernels.widen import widen_to_q8_0
from astrai.model.quantization import native_type

Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", [QuantType.Q4_0, QuantType.Q5_0])
def test_widened_blocks_dequantize_to_the_same_weights(qtype):
    rng = np.random.default_rng(int(qtype))
    w = (rng.standard_normal((24, 256)) * rng.uniform(0.01, 3.0, (24, 1))).astype(np.float32)
    w[3] = 0.0  # an all-zero row: d = 0
    raw = gguf.quants.quantize(w, Q(int(qtype)))
    wide = widen_to_q8_0(torch.from_numpy(raw), qtype).numpy()
    assert wide.shape == (24, 256 // 32 * 34)
    np.testing.assert_array_equal(gguf.quants.dequantize(wide, Q.Q8_0), gguf.quants.dequantize(raw, Q(int(qtype))))


def test_only_exact_mixes_are_packed():
    assert native_type({int(Q.Q5_0), int(Q.Q8_0)}, 640) == QuantType.Q8_0
    assert native_type({int(Q.Q4_0), int(Q.Q5_0)}, 64) == QuantType.Q8_0
    assert native_type({int(Q.Q4_K), int(Q.Q6_K)}, 256) is None  # Q4_K's mins have no Q8_0 form
    assert native_type({int(Q.Q4_1), int(Q.Q8_0)}, 64) is None
    with pytest.raises(ValueError, match="not exactly representable"):
        widen_to_q8_0(torch.zeros(1, 20, dtype=torch.uint8), QuantType.Q4_1)
