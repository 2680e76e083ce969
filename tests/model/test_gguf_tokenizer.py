"""SentencePiece GGUF tokenizers equal llama.cpp's tokenization of the same file, token for token.

The reference ids come from `llama-tokenize` (bench/fixtures/tokenizer_ids.py records them into
tests/data/tokens/, with the command) over tests/data/tokenizer_texts.json: code, whitespace runs,
emoji, CJK and other scripts, numbers, accents, special-token text, byte-fallback characters,
the empty string. Three files: the real Gemma 3 270M (no space prefix, 262k tokens with
user-defined whitespace and HTML tokens), and the tiny Llama-3- and Gemma-3-style models whose
SentencePiece vocabularies were trained for these tests (with and without the space prefix).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from astrai.model.gguf_loader import GGUFFile

DATA = Path(__file__).parent.parent / "data"
TEXTS = json.loads((DATA / "tokenizer_texts.json").read_text(encoding="utf-8"))["texts"]
TINY = ["tiny-llama3-f32", "tiny-gemma3-f32"]


def fixture(stem: str) -> dict:
    return json.loads((DATA / "tokens" / f"{stem}.json").read_text(encoding="utf-8"))


def check_against_llama_cpp(tokenizer, recorded: dict) -> None:
    assert len(recorded["ids"]) == len(TEXTS), "tokens fixture is out of date: rerun bench/fixtures/tokenizer_ids.py"
    mismatched = [(text, ours, theirs) for text, theirs in zip(TEXTS, recorded["ids"], strict=True)
                  if (ours := tokenizer.encode(text)) != theirs]
    assert not mismatched, f"{len(mismatched)}/{len(TEXTS)} texts differ from llama.cpp, first: {mismatched[0]}"


def test_real_gemma_tokenizer_matches_llama_cpp(gemma):
    _, tokenizer = gemma
    recorded = fixture("gemma-3-270m-q4_k_m")
    check_against_llama_cpp(tokenizer, recorded)
    assert tokenizer.bos_token_id == 2 and tokenizer.eos_token_ids == [1, 106]  # <eos>, <end_of_turn>
    # Prompts get the file's BOS (add_bos_token), as llama.cpp adds it; a text that already starts
    # with "<bos>" keeps one (llama.cpp would warn and add a second).
    for text, ids in zip(TEXTS, recorded["ids"], strict=True):
        expected = ids if ids[:1] == [2] else [2, *ids]
        assert tokenizer.encode(text, add_special_tokens=True) == expected


@pytest.mark.parametrize("stem", TINY)
def test_tiny_sentencepiece_tokenizers_match_llama_cpp(stem):
    path = DATA / "tiny" / f"{stem}.gguf"
    recorded = fixture(stem)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded["sha256"], \
        f"{path.name} changed since its tokens were recorded: rerun bench/fixtures/tokenizer_ids.py"
    file = GGUFFile(path)
    assert file.field("tokenizer.ggml.model") == "llama"
    check_against_llama_cpp(file.tokenizer([1]), recorded)


@pytest.mark.parametrize("stem", TINY)
def test_space_prefix_follows_the_file(stem):
    """The Llama-style file asks for a "▁" prefix (llama.cpp's default), the Gemma-style one not."""
    file = GGUFFile(DATA / "tiny" / f"{stem}.gguf")
    tokenizer = file.tokenizer([1])
    prefixed = file.field("tokenizer.ggml.add_space_prefix", True)
    assert prefixed == (stem == "tiny-llama3-f32")
    first = tokenizer.backend.id_to_token(tokenizer.encode("the light")[0])
    assert first.startswith("\u2581") == prefixed
    assert tokenizer.decode(tokenizer.encode("the light")) == "the light"


def test_real_gemma_decode_round_trips(gemma):
    _, tokenizer = gemma
    for text in TEXTS:
        if "\u2581" in text:  # a literal "▁" decodes as a space in every SentencePiece tokenizer
            continue
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
        stream = tokenizer.incremental(skip_special_tokens=False)
        assert "".join(stream.push(i) for i in ids) + stream.flush() == text
