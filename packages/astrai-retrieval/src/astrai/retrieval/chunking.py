"""Static chunking as OpenAI's vector stores define it.

A file's tokens are cut into windows of `max_chunk_size_tokens` tokens, each window starting
`max_chunk_size_tokens - chunk_overlap_tokens` tokens after the previous one; a window is
emitted only if it holds a token the previous window did not (so the tail never yields a chunk
made of overlap alone). Limits are OpenAI's: size 100..4096 (default 800), overlap >= 0 and
<= size / 2 (default 400).

Tokens come from the caller as character spans (the server passes its embedder's tokenizer
offsets), and each chunk's text is the original text from its first token's start to its last
token's end, so no decode step can alter it (an uncased tokenizer would lowercase it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import RetrievalInputError

MIN_CHUNK_SIZE_TOKENS = 100
MAX_CHUNK_SIZE_TOKENS = 4096
DEFAULT_CHUNK_SIZE_TOKENS = 800
DEFAULT_CHUNK_OVERLAP_TOKENS = 400

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""text -> (start, end) character offsets of each token, in order, special tokens excluded."""

_NON_SPACE = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """A tokenizer-free default: every run of non-whitespace characters is one token."""
    return [m.span() for m in _NON_SPACE.finditer(text)]


@dataclass(frozen=True)
class ChunkingSettings:
    """OpenAI's `chunking_strategy.static` (validated; `param` names OpenAI's field)."""

    max_chunk_size_tokens: int = DEFAULT_CHUNK_SIZE_TOKENS
    chunk_overlap_tokens: int = DEFAULT_CHUNK_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        size, overlap = self.max_chunk_size_tokens, self.chunk_overlap_tokens
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_CHUNK_SIZE_TOKENS <= size <= MAX_CHUNK_SIZE_TOKENS:
            raise RetrievalInputError(
                f"max_chunk_size_tokens must be an integer from {MIN_CHUNK_SIZE_TOKENS} to {MAX_CHUNK_SIZE_TOKENS}, "
                f"got {size!r}", "chunking_strategy.static.max_chunk_size_tokens")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0 or overlap > size // 2:
            raise RetrievalInputError(
                f"chunk_overlap_tokens must be an integer from 0 to half of max_chunk_size_tokens ({size // 2}), "
                f"got {overlap!r}", "chunking_strategy.static.chunk_overlap_tokens")

    @property
    def stride(self) -> int:
        return self.max_chunk_size_tokens - self.chunk_overlap_tokens


@dataclass(frozen=True)
class Chunk:
    """One chunk: `text` is `source[start:end]`; tokens [token_start, token_start + num_tokens)."""

    index: int
    text: str
    start: int
    end: int
    token_start: int
    num_tokens: int


def chunk_text(text: str, settings: ChunkingSettings | None = None, token_spans: TokenSpans = word_spans) -> list[Chunk]:
    """Cut `text` into overlapping token windows (see the module docstring); [] for a text
    without tokens."""
    settings = settings or ChunkingSettings()
    spans = list(token_spans(text))
    size, stride, overlap = settings.max_chunk_size_tokens, settings.stride, settings.chunk_overlap_tokens
    chunks: list[Chunk] = []
    first = 0
    while first < len(spans) and (first == 0 or first + overlap < len(spans)):
        last = min(first + size, len(spans)) - 1
        start, end = spans[first][0], spans[last][1]
        chunks.append(Chunk(len(chunks), text[start:end], start, end, first, last - first + 1))
        first += stride
    return chunks
