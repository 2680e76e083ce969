"""The engine's greedy output equals transformers reading the same GGUF (float32), in a busy batch."""

import torch
from astrai.scheduler import SamplingParams

from .conftest import settle

NEW_TOKENS = 32


def hf_greedy(hf_model, prompt: list[int]) -> list[int]:
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def test_greedy_matches_transformers_for_32_tokens(engine, hf_model, prompts):
    tok = engine.tokenizer
    targets = [
        tok.apply_chat_template([{"role": "user", "content": "Tell me about the moon."}], tokenize=True),
        tok.encode("In a small village by the sea, there lived an old fisherman who"),
    ]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    busy = [SamplingParams(max_tokens=8 + i, temperature=0.8, seed=i, ignore_eos=True) for i in range(6)]
    outs = engine.generate(targets + prompts[:6], [params, params] + busy)
    for target, out in zip(targets, outs, strict=False):
        assert len(out.token_ids) == NEW_TOKENS
        assert out.token_ids == hf_greedy(hf_model, target)
    settle(engine)
