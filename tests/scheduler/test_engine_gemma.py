"""The engine on a Gemma-3-style GGUF (llama.cpp's conversion of a tiny random model, 8-token
sliding window on five of its six layers): greedy output equals transformers', with and without
the prefix cache and however the prompt is chunked; `<end_of_turn>` stops generation; the
file's context length is the default length cap; the file's missing chat template becomes
Gemma's turn format."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from astrai.scheduler import Engine, SamplingParams

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/fixtures rebuilds the transformers reference
    sys.path.insert(0, str(REPO))
from bench.fixtures.tiny_models import gguf_path, reference_model  # noqa: E402

PROMPT = ("The lighthouse keeper's daughter learned the tides before she learned to read. Each morning she "
          "walked the wet sand below the cliff")


@pytest.fixture(scope="module")
def engine():
    eng = Engine.from_pretrained(str(gguf_path("tiny-gemma3")), dtype="float32", page_size=4, num_pages=4096,
                                 max_num_batched_tokens=16)
    yield eng
    eng.shutdown()


def transformers_greedy(prompt_ids: list[int], new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = reference_model("tiny-gemma3").generate(torch.tensor([prompt_ids]), max_new_tokens=new_tokens,
                                                      do_sample=False, eos_token_id=None)
    return out[0, len(prompt_ids):].tolist()


def test_greedy_equals_transformers_across_the_window_with_the_prefix_cache(engine):
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    ids = engine.tokenizer.encode(PROMPT, add_special_tokens=True)
    assert len(ids) > 3 * engine.config.sliding_window
    expected = transformers_greedy(ids, 24)
    first = engine.generate([ids], params)[0]
    assert first.token_ids == expected
    again = engine.generate([ids], params)[0]  # prefix from the cache, 16-token prefill chunks
    assert again.num_cached_tokens > engine.config.sliding_window and again.token_ids == expected
    with engine.with_settings(enable_prefix_cache=False, max_num_batched_tokens=2048) as plain:
        assert plain.generate([ids], params)[0].token_ids == expected


def test_end_of_turn_stops_generation(engine):
    end_of_turn = engine.tokenizer.backend.token_to_id("<end_of_turn>")
    assert end_of_turn in engine.tokenizer.eos_token_ids
    out = engine.chat([{"role": "user", "content": "Hi"}],
                      SamplingParams(max_tokens=8, temperature=0.0, logit_bias={end_of_turn: 100.0}))
    assert out.finish_reason == "stop" and out.token_ids == [end_of_turn] and out.text == ""


def test_context_length_and_turn_format_come_from_the_file(engine):
    assert engine.config.max_position_embeddings == 4096 and engine.max_model_len == 4096
    assert engine.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    assert engine.describe().forward == "torch"  # the native fused step does not know Gemma layers yet
