"""Presets and the exact parameter / KV-cache arithmetic."""

from __future__ import annotations

import pytest
import torch
from astrai.model import PRESETS, ModelConfig, Transformer, resolve_dtype


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_num_parameters_counts_every_weight(name):
    config = ModelConfig.preset(name)
    model = Transformer(config, device="meta", init_weights=False)  # shapes only, no memory
    assert config.num_parameters() == sum(p.numel() for p in model.parameters())


def test_astrai_1b_preset_is_the_seed_model():
    c = ModelConfig.preset("astrai-1b")
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size) == (24, 1536, 24, 4, 6912)
    assert (c.vocab_size, c.max_position_embeddings, c.dtype, c.tie_word_embeddings) == (100_000, 2048, "bfloat16", False)
    assert c.num_parameters() == 1_203_807_744
    # 24 layers x (K + V) x 4 heads x 64 dims x 2 bytes
    assert c.kv_bytes_per_token() == 24 * 2 * 4 * 64 * 2
    assert c.kv_bytes_per_token(torch.float32) == 2 * c.kv_bytes_per_token("bfloat16")


def test_presets_are_independent_copies():
    a = ModelConfig.preset("tiny-llama")
    a.eos_token_ids.append(99)
    assert ModelConfig.preset("tiny-llama").eos_token_ids == [2]


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'"):
        ModelConfig(name="x", architecture="gpt2")
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig(name="x", num_heads=6, num_kv_heads=4)
    with pytest.raises(KeyError, match="unknown preset"):
        ModelConfig.preset("gpt-5")


@pytest.mark.parametrize(("name", "expected"), [
    ("float32", torch.float32), ("fp32", torch.float32), ("float", torch.float32), ("FP32", torch.float32),
    ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
    ("float16", torch.float16), ("fp16", torch.float16), ("half", torch.float16), (torch.float16, torch.float16),
])
def test_resolve_dtype_accepts_the_cli_aliases(name, expected):
    assert resolve_dtype(name) is expected


def test_resolve_dtype_none_and_auto_mean_the_callers_default():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("auto", default="bfloat16") is torch.bfloat16
    assert resolve_dtype(None, default=torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unsupported dtype 'int8'.*'auto'"):
        resolve_dtype("int8")


def test_transformer_is_a_forward_model():
    from astrai.model import ForwardModel

    assert isinstance(Transformer(ModelConfig.preset("tiny-llama"), device="meta", init_weights=False), ForwardModel)
