"""OpenAI's static chunking: window sizes, overlap, the tail rule, limits; text cut from the source."""

from __future__ import annotations

import pytest
from astrai.retrieval import ChunkingSettings, RetrievalInputError, chunk_text, word_spans


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_windows_overlap_and_tail():
    text = words(250)
    chunks = chunk_text(text, ChunkingSettings(100, 50))
    assert [(c.token_start, c.num_tokens) for c in chunks] == [(0, 100), (50, 100), (100, 100), (150, 100)]
    # a window starting at 200 would hold only tokens 200..249, all inside the previous one: none
    assert all(c.text == text[c.start: c.end] for c in chunks)
    assert chunks[1].text.split()[0] == "w50" and chunks[-1].text.split()[-1] == "w249"


def test_no_overlap_and_short_texts():
    assert [(c.token_start, c.num_tokens) for c in chunk_text(words(230), ChunkingSettings(100, 0))] == [
        (0, 100), (100, 100), (200, 30)]
    assert [c.num_tokens for c in chunk_text(words(7))] == [7]
    assert chunk_text("") == [] and chunk_text("   \n ") == []
    assert [(c.token_start, c.num_tokens) for c in chunk_text(words(151), ChunkingSettings(100, 50))] == [
        (0, 100), (50, 100), (100, 51)]


def test_text_keeps_its_whitespace_and_case_inside_a_chunk():
    text = "Alpha  beta\n\nGamma\tdelta " * 60
    chunk = chunk_text(text, ChunkingSettings(100, 10))[0]
    assert chunk.text == text[chunk.start: chunk.end] and "\n\nGamma\t" in chunk.text


def test_caller_token_spans():
    """A character-level tokenizer: every non-space character is a token."""
    def char_spans(text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    text = "ab cd " * 100  # 400 tokens
    chunks = chunk_text(text, ChunkingSettings(120, 60), char_spans)
    assert [c.token_start for c in chunks] == [0, 60, 120, 180, 240, 300]  # 300: tokens 360..399 are new
    assert chunks[0].text.replace(" ", "") == ("abcd" * 30)
    assert word_spans("a  bb") == [(0, 1), (3, 5)]


@pytest.mark.parametrize("size,overlap,param", [
    (99, 0, "max_chunk_size_tokens"), (4097, 0, "max_chunk_size_tokens"), (800, 401, "chunk_overlap_tokens"),
    (800, -1, "chunk_overlap_tokens"), (True, 0, "max_chunk_size_tokens"), (200.0, 0, "max_chunk_size_tokens"),
])
def test_limits(size, overlap, param):
    with pytest.raises(RetrievalInputError) as info:
        ChunkingSettings(size, overlap)
    assert info.value.param.endswith(param)
    assert ChunkingSettings(4096, 2048).stride == 2048 and ChunkingSettings().max_chunk_size_tokens == 800
