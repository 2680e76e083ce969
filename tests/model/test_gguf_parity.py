"""GGUFs written by llama.cpp's own converter and quantizer load and match transformers.

The files under tests/data/tiny/ were made by bench/fixtures/tiny_models.py: tiny random
Llama-3.2-style (llama3 RoPE scaling, which the converter stores as a `rope_freqs` tensor; tied
head) and Gemma-3-style models (five sliding-window layers then a global one, each kind with its
own RoPE base; QK-norm, sandwich norms, GeGLU, scaled embedding, tied head) built with
transformers, saved, converted with `convert_hf_to_gguf.py --outtype f32` (the Llama one also
split in three parts) and, for the wide variants (every row a multiple of 256), quantized with
`llama-quantize` to Q8_0 and Q4_K_M. `reference_model` rebuilds the same transformers models
from their per-tensor seeds.

Bounds: f32 files, relative Frobenius error of the logits <= 1e-4, through `model.logits` and
through the paged forward (a prefill, a second chunk over the cached prefix, then one-token
decode steps, all crossing the Gemma model's 8-token window). Quantized files, dequantized:
Q8_0 <= 0.02 and Q4_K_M <= 0.15 against transformers (measured ~0.012 / ~0.10 for the Llama
model, ~0.007 / ~0.027 for the Gemma one), and the default "auto" load (Q8_0 packed for the
native kernels) within 0.005 of the dequantized float32 path of the same file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from astrai.model import ForwardBatch, NativeForward, Transformer, load_model
from astrai.model.gguf_loader import GGUFFile
from astrai.model.quantized import QuantizedLinear

from bench.fixtures.tiny_models import SPECS, gguf_path, reference_model

TINY = Path(__file__).parent.parent / "data" / "tiny"
PAGE_SIZE = 4


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


def token_ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, 640, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def reference_logits(name: str, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference_model(name)(torch.tensor([ids])).logits[0].float()


def paged_logits(model: Transformer | NativeForward, ids: list[int], chunks: tuple[int, ...]) -> torch.Tensor:
    """Logits of every position, computed as the engine does: prefill chunks over the cached
    prefix, then decode steps, K/V in scattered pages."""
    c = model.config
    num_pages = -(-len(ids) // PAGE_SIZE)
    pages = torch.randperm(num_pages + 5, generator=torch.Generator().manual_seed(9))[:num_pages].tolist()
    shape = (num_pages + 5, PAGE_SIZE, c.num_kv_heads, c.head_dim)
    caches = [(torch.full(shape, float("nan")), torch.full(shape, float("nan"))) for _ in range(c.num_layers)]
    rows, start = [], 0
    steps = [*chunks, *([1] * (len(ids) - sum(chunks)))]
    for size in steps:
        new = ids[start : start + size]
        batch = ForwardBatch.build([new], [start], [pages], PAGE_SIZE, logits_indices=range(size))
        rows.append(model(batch, caches, PAGE_SIZE))
        start += size
    return torch.cat(rows)


FEATURES = {
    "tiny-llama3": lambda c: (c.architecture == "llama" and c.tie_word_embeddings and c.rope_freq_factors is not None
                              and min(c.rope_freq_factors) == 1.0 and max(c.rope_freq_factors) == 8.0
                              and any(1.0 < f < 8.0 for f in c.rope_freq_factors)),
    "tiny-gemma3": lambda c: (c.architecture == "gemma3" and c.sliding_window == 8 and c.rope_local_theta == 10_000.0
                              and c.rope_theta == 1_000_000.0 and c.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
                              and c.hidden_act == "gelu_tanh" and c.sandwich_norms and c.qk_norm
                              and c.query_pre_attn_scalar == 32 and c.embedding_scale == 8.0),
}


@pytest.mark.parametrize("name, path", [
    ("tiny-llama3", gguf_path("tiny-llama3")),
    ("tiny-llama3", TINY / "tiny-llama3-f32-split-00001-of-00003.gguf"),
    ("tiny-gemma3", gguf_path("tiny-gemma3")),
], ids=["llama3", "llama3-split", "gemma3"])
def test_f32_gguf_matches_transformers(name, path):
    model, _ = load_model(path, dtype=torch.float32, quantization="none")
    assert FEATURES[name](model.config)
    reference = reference_model(name)
    assert model.config.num_parameters() == sum(p.numel() for p in reference.parameters())
    assert torch.equal(model.embed_tokens.weight, reference.get_input_embeddings().weight), \
        f"{path.name} no longer matches its seeds: rerun bench/fixtures/tiny_models.py"
    ids = token_ids(40, seed=1)
    expected = reference_logits(name, ids)
    assert relative_error(model.logits(ids), expected) <= 1e-4
    assert relative_error(paged_logits(model, ids, chunks=(13, 11)), expected) <= 1e-4


def test_split_gguf_reads_every_part():
    file = GGUFFile(TINY / "tiny-llama3-f32-split-00001-of-00003.gguf")
    assert file.container.parts == 3 and {t.part for t in file.tensors.values()} == {0, 1, 2}
    assert file.model_name == GGUFFile(gguf_path("tiny-llama3")).model_name


def test_rope_freqs_and_window_matter():
    """Guards: a loader that ignored rope_freqs, or attention that ignored the window, would fail above."""
    ids = token_ids(40, seed=1)
    for name, change in (("tiny-llama3", {"rope_freq_factors": None}), ("tiny-gemma3", {"sliding_window": 10_000})):
        model, _ = load_model(gguf_path(name), dtype=torch.float32, quantization="none")
        altered = Transformer(dataclasses.replace(model.config, **change), dtype=torch.float32, init_weights=False)
        altered.load_state_dict(model.state_dict())
        assert relative_error(altered.logits(ids), reference_logits(name, ids)) > 1e-3


@pytest.mark.parametrize("name", ["wide-llama3", "wide-gemma3"])
@pytest.mark.parametrize("kind, bound, k_quants", [("Q8_0", 0.02, set()), ("Q4_K_M", 0.15, {"Q4_K", "Q6_K"})])
def test_quantized_conversions_stay_close(name, kind, bound, k_quants):
    assert kind in SPECS[name].quants
    path = gguf_path(name, kind)
    assert k_quants <= GGUFFile(path).quant_types(), "llama-quantize should have written K-quant tensors"
    dense, _ = load_model(path, dtype=torch.float32, quantization="none")
    auto, _ = load_model(path, dtype=torch.float32)
    ids = token_ids(48, seed=2)
    expected = reference_logits(name, ids)
    got = dense.logits(ids)
    assert relative_error(got, expected) <= bound
    assert relative_error(auto.logits(ids), got) <= 0.005
    assert relative_error(paged_logits(auto, ids, chunks=(20,)), got) <= 0.005
    if kind == "Q8_0":
        assert auto.low_bit and "Q8_0 (packed)" in auto.weight_format()
    # every projection served packed, none dequantized; a fused projection whose parts mix
    # block types (Q4_K_M's Q4_K q/k with a Q6_K v) keeps each part in its own type
    projections = [m for layer in auto.layers for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                          layer.mlp.gate_up_proj, layer.mlp.down_proj)]
    assert all(isinstance(m, QuantizedLinear) for m in projections)
    split = {tuple(q.name for q in m.qtypes) for m in projections if len(m.qtypes) > 1}
    assert (("Q4_K", "Q4_K", "Q6_K") in split) == (kind == "Q4_K_M")
    fused = NativeForward.build(auto)
    assert fused is not None
    assert relative_error(paged_logits(fused, ids, chunks=(20,)), got) <= 0.005
