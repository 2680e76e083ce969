"""Tokenizer, chat template and streaming decode against transformers on the bundled model."""

from __future__ import annotations

import pytest
from astrai.model import ChatTemplateError, ModelConfig
from astrai.model.hf_loader import load_hf_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

TEXTS = [
    "Hello, world!",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Robots 🤖 paint 🎨 with emoji 👩‍👩‍👧‍👦 and flags 🇫🇷!",
    "  leading spaces, tabs\tand\nnew\n\nlines  ",
    "Numbers 3.14159 and 2024-11-22, code: def f(x): return x**2",
    "<|im_start|>user\nmixed 漢字 and 😀<|im_end|>",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in haiku. 俳句で答えて"},
     {"role": "user", "content": "Describe the sea 🌊"},
     {"role": "assistant", "content": "Waves fold into foam"},
     {"role": "user", "content": "And the moon? 🌙"}],
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(smollm2, hf_tokenizer, text):
    _, tokenizer = smollm2
    ids = tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.encode(text, add_special_tokens=True) == hf_tokenizer.encode(text, add_special_tokens=True)
    for skip in (True, False):
        assert tokenizer.decode(ids, skip_special_tokens=skip) == hf_tokenizer.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(smollm2, hf_tokenizer, messages, add_generation_prompt):
    _, tokenizer = smollm2
    ours = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    ref = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert ours == ref
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == hf_tokenizer.encode(ref, add_special_tokens=False)


def test_chat_template_rejects_malformed_messages(smollm2):
    _, tokenizer = smollm2
    with pytest.raises(ChatTemplateError):
        tokenizer.apply_chat_template("not a list of messages")
    with pytest.raises(ChatTemplateError, match="render"):
        tokenizer.apply_chat_template([{"content": "no role"}])
    with pytest.raises(ChatTemplateError, match="TypeError"):
        tokenizer.apply_chat_template([{"role": "user", "content": None}])


def stream(tokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    detok = tokenizer.incremental(skip_special_tokens=skip_special_tokens)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    return pieces


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_pieces_are_whole_characters_and_sum_to_decode(smollm2, text):
    _, tokenizer = smollm2
    ids = tokenizer.encode(text)
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_incremental_holds_back_a_split_emoji(smollm2):
    _, tokenizer = smollm2
    ids = tokenizer.encode("🤖")
    assert len(ids) > 1, "the emoji should span several byte tokens"
    pieces = stream(tokenizer, ids)
    assert pieces[:-2] == [""] * (len(ids) - 1) and pieces[-2] == "🤖"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=49151), max_size=24), st.booleans())
def test_incremental_concatenation_equals_decode_for_any_ids(smollm2, ids, skip):
    _, tokenizer = smollm2
    assert "".join(stream(tokenizer, ids, skip)) == tokenizer.decode(ids, skip_special_tokens=skip)


def test_hf_directory_tokenizer_matches_transformers(hf_tokenizer, tmp_path):
    """A tokenizer saved by transformers (tokenizer.json + config + template) reads back identically."""
    hf_tokenizer.save_pretrained(tmp_path)
    tokenizer = load_hf_tokenizer(tmp_path, ModelConfig.preset("smollm2-135m-instruct"))
    assert tokenizer.eos_token_ids == [2] and tokenizer.bos_token_id == 1
    for text in TEXTS:
        assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    messages = CONVERSATIONS[1]
    ours = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert ours == hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
