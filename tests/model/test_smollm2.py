"""The bundled SmolLM2-135M-Instruct GGUF against transformers reading the same file."""

from __future__ import annotations

import pytest
import torch
import transformers
from astrai.model import ForwardBatch, ModelConfig

PAGE_SIZE = 16
STORY = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def greedy(model, prompt_ids: list[int], max_new_tokens: int, stop_ids: list[int]) -> list[int]:
    """Greedy decoding through the paged forward path: one prefill, then one token per step."""
    c = model.config
    total = len(prompt_ids) + max_new_tokens
    num_pages = -(-total // PAGE_SIZE)
    pages = list(range(num_pages))[::-1]  # reversed page order: nothing relies on contiguity
    caches = [
        (torch.zeros(num_pages, PAGE_SIZE, c.num_kv_heads, c.head_dim, dtype=model.dtype),
         torch.zeros(num_pages, PAGE_SIZE, c.num_kv_heads, c.head_dim, dtype=model.dtype))
        for _ in range(c.num_layers)
    ]
    logits = model(ForwardBatch.build([prompt_ids], [0], [pages], PAGE_SIZE), caches, PAGE_SIZE)
    out: list[int] = []
    while len(out) < max_new_tokens:
        token = int(logits[0].argmax())
        out.append(token)
        if token in stop_ids:
            break
        position = len(prompt_ids) + len(out) - 1
        logits = model(ForwardBatch.build([[token]], [position], [pages], PAGE_SIZE), caches, PAGE_SIZE)
    return out


@pytest.fixture(scope="module")
def hf_model(gguf_dir):
    """transformers' own reading of the bundled GGUF, float32: the reference."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    ).eval()


def test_bundled_config_matches_preset(smollm2):
    model, tokenizer = smollm2
    preset = ModelConfig.preset("smollm2-135m-instruct")
    loaded = model.config.to_dict()
    for key in ("architecture", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "rope_theta", "tie_word_embeddings", "eos_token_ids", "bos_token_id"):
        assert loaded[key] == getattr(preset, key), key
    assert model.config.num_parameters() == preset.num_parameters() == 134_515_008
    assert sum(p.numel() for p in model.parameters()) == preset.num_parameters()
    assert tokenizer.eos_token_ids == [2] and tokenizer.decode([2], skip_special_tokens=False) == "<|im_end|>"


def test_greedy_continuation_matches_transformers(smollm2, hf_model):
    """Our greedy decode (paged prefill + one-token steps) is transformers' greedy output.

    A sequence is model M's greedy continuation exactly when, at every step, M's argmax given the
    prefix is the next token. One causal forward of transformers over prompt + our tokens yields
    all those argmaxes at once, so this checks the claim token by token without 40 reference steps.
    """
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template(STORY, add_generation_prompt=True, tokenize=True)
    ours = greedy(model, prompt, 40, tokenizer.eos_token_ids)
    assert len(ours) >= 32
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + ours])).logits[0]
    reference = logits[len(prompt) - 1 : len(prompt) - 1 + len(ours)].argmax(dim=-1).tolist()
    assert ours == reference
    assert "robot" in tokenizer.decode(ours).lower()


def test_full_sequence_logits_match_transformers(smollm2, hf_model):
    model, tokenizer = smollm2
    ids = tokenizer.encode("The quick brown fox jumps over the lazy dog. 東京は日本の首都です 🤖")
    with torch.no_grad():
        expected = hf_model(torch.tensor([ids])).logits[0]
    ours = model.logits(ids)
    assert float((ours - expected).abs().max() / expected.abs().max()) <= 1e-4


def test_capital_of_france_is_paris(smollm2):
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=True)
    answer = tokenizer.decode(greedy(model, prompt, 16, tokenizer.eos_token_ids))
    assert "Paris" in answer
