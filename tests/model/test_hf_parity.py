"""Logits parity with Hugging Face transformers on tiny random checkpoints (float32).

Each test builds a model with transformers, saves it with save_pretrained, loads the directory
through astrai's load_model and compares logits over a sequence long enough to reach the
scaled RoPE frequencies.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from astrai.model import load_model

VOCAB = 384
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
)
CASES = {
    "llama-llama3-rope": (transformers.LlamaConfig, dict(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        rope_theta=10000.0,
    ), None),
    "llama-linear-rope": (transformers.LlamaConfig, dict(
        rope_scaling={"rope_type": "linear", "factor": 2.0}, tie_word_embeddings=True,
    ), None),
    "qwen2-bias": (transformers.Qwen2Config, dict(rope_theta=1e6), None),
    "qwen3-qk-norm-head-dim": (transformers.Qwen3Config, dict(head_dim=32), None),
    "mistral-sharded": (transformers.MistralConfig, dict(sliding_window=None), "200KB"),
}
# What each case must switch on in astrai's config, so a silently ignored feature fails.
FEATURES = {
    "llama-llama3-rope": lambda c: c.rope_scaling["rope_type"] == "llama3" and not c.tie_word_embeddings,
    "llama-linear-rope": lambda c: c.rope_scaling["rope_type"] == "linear" and c.tie_word_embeddings,
    "qwen2-bias": lambda c: c.attention_bias and c.rope_theta == 1e6,
    "qwen3-qk-norm-head-dim": lambda c: c.qk_norm and c.head_dim == 32 != c.hidden_size // c.num_heads,
    "mistral-sharded": lambda c: c.rope_scaling is None and not c.attention_bias,
}


def max_relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest reference logit."""
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, tmp_path, randomize, write_word_tokenizer):
    config_cls, extra, shard_size = CASES[case]
    hf_config = config_cls(**COMMON, **extra)
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    randomize(reference, seed=hf_config.num_hidden_layers + len(case))
    reference.save_pretrained(tmp_path, **({"max_shard_size": shard_size} if shard_size else {}))
    write_word_tokenizer(tmp_path, VOCAB)
    if shard_size:
        assert (tmp_path / "model.safetensors.index.json").exists(), "expected a sharded checkpoint"

    model, _ = load_model(tmp_path, dtype=torch.float32)
    assert model.config.architecture == hf_config.model_type
    assert FEATURES[case](model.config)
    assert model.config.num_parameters() == sum(p.numel() for p in reference.parameters())

    ids = torch.randint(0, VOCAB, (80,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids[None]).logits[0].float()
    ours = model.logits(ids)
    assert ours.shape == expected.shape
    assert max_relative_error(ours, expected) <= 1e-4



def test_gemma3_directory_matches_transformers(tmp_path, randomize, write_word_tokenizer):
    """A `gemma3_text` checkpoint: norms stored as (multiplier - 1), a sliding and a global layer
    with their own RoPE bases, an 8-token window over 80 tokens, query_pre_attn_scalar != head_dim,
    final logit softcapping."""
    hf_config = transformers.Gemma3TextConfig(
        **COMMON, head_dim=32, sliding_window=8, query_pre_attn_scalar=24, final_logit_softcapping=30.0,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})
    hf_config._attn_implementation = "eager"
    reference = transformers.Gemma3ForCausalLM(hf_config).float().eval()
    randomize(reference, seed=5)
    reference.save_pretrained(tmp_path)
    write_word_tokenizer(tmp_path, VOCAB)

    model, _ = load_model(tmp_path, dtype=torch.float32)
    c = model.config
    assert (c.architecture, c.sliding_window, c.query_pre_attn_scalar, c.final_logit_softcapping) == ("gemma3", 8, 24, 30.0)
    assert c.layer_types == ["sliding_attention", "full_attention"] and c.rope_local_theta == 10_000.0
    assert model.config.num_parameters() == sum(p.numel() for p in reference.parameters())
    ids = torch.randint(0, VOCAB, (80,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids[None]).logits[0].float()
    assert max_relative_error(model.logits(ids), expected) <= 1e-4
