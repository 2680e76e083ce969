"""Tokenizer on the `tokenizers` library, with HF-style chat templates and streaming decode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tokenizers

from .chat_template import render_chat

REPLACEMENT_CHAR = "\ufffd"


class Tokenizer:
    """Text <-> token ids for one model, plus its chat template and stop tokens."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        eos_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        add_bos_token: bool = False,
        special_tokens: dict[str, str | None] | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = backend.token_to_id(bos_token) if bos_token else None
        ids = list(eos_token_ids)
        eos_id = backend.token_to_id(eos_token) if eos_token else None
        if not ids and eos_id is not None:
            ids = [eos_id]
        self.eos_token_ids: list[int] = ids
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.special_tokens = {"bos_token": bos_token, "eos_token": eos_token, **(special_tokens or {})}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() expects str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **extra: Any,
    ) -> str | list[int]:
        """Render a conversation; `tokenize=True` returns ids (no extra special tokens added)."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text = render_chat(
            self.chat_template, messages, add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens, **extra,
        )
        return self.encode(text) if tokenize else text

    def incremental(self, skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self, skip_special_tokens)


class IncrementalDetokenizer:
    """Streaming decode: each push returns only complete new text.

    It decodes a small window that starts a few tokens back (so decoders that strip a leading
    space see the same context) and holds back text ending in U+FFFD, the mark of a multi-byte
    character still waiting for its remaining bytes.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start: text before it is already emitted
        self.read_offset = 0  # tokens up to here are emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self.read_offset == len(self.ids):
            return ""
        emitted = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if not final and (len(text) <= len(emitted) or text.endswith(REPLACEMENT_CHAR)):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(emitted) :]
