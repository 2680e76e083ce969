"""The opt-in packed bf16 CPU path computes what the plain path computes.

Which path this machine can run is decided once, up front, and shows in the test id:
`[packed]` where oneDNN has fast bf16 (AVX512-BF16 / AMX) and `pack_for_cpu()` packs, or
`[unpacked]` where it cannot, and then the test proves that refusing changed nothing.
"""

from __future__ import annotations

import pytest
import torch
from astrai.model import ForwardBatch, ModelConfig, Transformer


def make(dtype: torch.dtype) -> Transformer:
    model = Transformer(ModelConfig.preset("tiny-qwen3"), dtype=dtype).eval()
    model.init_random_weights(seed=5, std=0.1)
    return model


PATH_HERE = "packed" if make(torch.bfloat16).pack_for_cpu() else "unpacked"


def test_float32_is_never_packed():
    assert make(torch.float32).pack_for_cpu() is False


@pytest.mark.parametrize("path", [PATH_HERE])
def test_bf16_after_pack_for_cpu_tracks_float32_and_keeps_ragged_semantics(path):
    reference = make(torch.float32)
    model = make(torch.bfloat16)
    ids = torch.randint(0, 512, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    before = model.logits(ids)
    linears = [type(layer.self_attn.qkv_proj) for layer in model.layers]

    packed = model.pack_for_cpu()
    assert packed is (path == "packed")
    assert model.pack_for_cpu() is False  # packed already, or still impossible: a no-op either way
    full = model.logits(ids)
    if packed:
        assert model.packed_head is not None
        assert all(type(layer.self_attn.qkv_proj).__name__ == "PackedLinear" for layer in model.layers)
    else:  # refused: nothing was swapped, and the outputs are bit-identical
        assert model.packed_head is None and not model.packed
        assert [type(layer.self_attn.qkv_proj) for layer in model.layers] == linears
        assert torch.equal(full, before)
    expected = reference.logits(ids)
    assert float((full - expected).abs().max() / expected.abs().max()) < 0.05

    c, page = model.config, 4
    caches = [(torch.zeros(16, page, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16),
               torch.zeros(16, page, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16)) for _ in range(c.num_layers)]
    pages = [9, 2, 14, 5, 0, 11, 7, 3]
    model(ForwardBatch.build([ids[:29]], [0], [pages], page), caches, page)
    step = model(ForwardBatch.build([[ids[29]]], [29], [pages], page), caches, page)
    assert float((step[0] - full[-1]).abs().max() / full[-1].abs().max()) < 0.05
