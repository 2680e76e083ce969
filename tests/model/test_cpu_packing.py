"""The opt-in packed bf16 CPU path computes what the plain path computes."""

from __future__ import annotations

import pytest
import torch
from astrai.model import ForwardBatch, ModelConfig, Transformer


def make(dtype: torch.dtype) -> Transformer:
    model = Transformer(ModelConfig.preset("tiny-qwen3"), dtype=dtype).eval()
    model.init_random_weights(seed=5, std=0.1)
    return model


def test_float32_is_never_packed():
    assert make(torch.float32).pack_for_cpu() is False


def test_packed_bf16_tracks_float32_and_keeps_ragged_semantics():
    reference = make(torch.float32)
    model = make(torch.bfloat16)
    if not model.pack_for_cpu():
        pytest.skip("this CPU/torch build has no fast oneDNN bf16")
    assert model.pack_for_cpu() is False  # already packed: a no-op
    ids = torch.randint(0, 512, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    full = model.logits(ids)
    expected = reference.logits(ids)
    assert float((full - expected).abs().max() / expected.abs().max()) < 0.05

    c, page = model.config, 4
    caches = [(torch.zeros(16, page, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16),
               torch.zeros(16, page, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16)) for _ in range(c.num_layers)]
    pages = [9, 2, 14, 5, 0, 11, 7, 3]
    model(ForwardBatch.build([ids[:29]], [0], [pages], page), caches, page)
    step = model(ForwardBatch.build([[ids[29]]], [29], [pages], page), caches, page)
    assert float((step[0] - full[-1]).abs().max() / full[-1].abs().max()) < 0.05
