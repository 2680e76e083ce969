"""RAG prompts laid out so retrieved passages come from the radix prefix cache.

The chat template is rendered once around a sentinel placed where the passages go, and the
prompt is assembled from token ids, never re-tokenised as one text:

    head     template start + system header + RAG_INSTRUCTIONS       (the same for every request)
    passage  PASSAGE_TEMPLATE per passage, each tokenised on its own  (the same ids wherever it goes)
    tail     the caller's own system text, end of system turn, the conversation, assistant header

So two requests that place the same passages in the same order share `head + passages` token
for token, and the KV pages of that prefix are shared copy-on-write through the radix cache.
The order is astrai.retrieval's `order_for_cache`: passages extending the longest prefix the
engine already caches first (asked through `engine.lookup_prefix`, which changes nothing), the
rest most popular first, so popular passages settle at the front of many prompts;
`"relevance"` keeps the search order instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from astrai.retrieval import OrderMode, PassagePopularity, PromptPassage, SearchHit, order_for_cache
from astrai.scheduler import Tokenizer
from astrai.server.errors import bad_request

RAG_INSTRUCTIONS = ("Answer the user's question using the passages below. Quote them where it helps, and say so "
                    "if they do not contain the answer.")
PASSAGE_TEMPLATE = "<passage source=\"{filename}\">\n{text}\n</passage>\n"
SENTINEL = "<<astrai-rag-passages>>"


@dataclass(frozen=True)
class RagPrompt:
    token_ids: list[int]
    hits: list[SearchHit]  # the passages in the prompt, in prompt order
    head_tokens: int
    passage_tokens: int


def split_template(tokenizer: Tokenizer, messages: list[dict[str, Any]], extra: dict[str, Any],
                   param: str) -> tuple[str, str]:
    """The rendered chat template before and after the passages' place in the first (system) turn.

    The caller's own system message follows the passages; a template that refuses a system
    turn gets them at the start of the first user turn instead."""
    own_system = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
    rest = messages[1:] if own_system is not None else messages
    block = f"{RAG_INSTRUCTIONS}\n\n{SENTINEL}" + (f"\n{own_system}" if own_system else "")
    attempts = [[{"role": "system", "content": block}, *rest]]
    if rest and rest[0].get("role") == "user":
        attempts.append([{**rest[0], "content": f"{block}\n{rest[0]['content']}"}, *rest[1:]])
    for candidate in attempts:
        try:
            text = tokenizer.apply_chat_template(candidate, add_generation_prompt=True, tokenize=False, **extra)
        except Exception:  # a template may refuse a system turn; try the next layout
            continue
        if isinstance(text, str) and text.count(SENTINEL) == 1:
            head, tail = text.split(SENTINEL)
            return head, tail
    raise bad_request(f"{param}: the chat template rejected these messages with retrieved passages", param)


def passage_text(hit: SearchHit, filename: str) -> str:
    return PASSAGE_TEMPLATE.format(filename=filename, text=hit.passage.text)


def build_prompt(tokenizer: Tokenizer, messages: list[dict[str, Any]], hits: Sequence[SearchHit],
                 filenames: Callable[[str], str], *, order: OrderMode, popularity: PassagePopularity,
                 cached_prefix_len: Callable[[Sequence[int]], int], budget: int,
                 extra: dict[str, Any] | None = None, param: str = "messages") -> RagPrompt:
    """The prompt's token ids with `hits` placed in `order`; passages ranked last are left out
    while the prompt would exceed `budget` tokens."""
    head_text, tail_text = split_template(tokenizer, messages, extra or {}, param)
    head = tokenizer.encode(head_text)
    tail = tokenizer.encode(tail_text)
    pieces = [PromptPassage(hit.passage.id, tuple(tokenizer.encode(passage_text(hit, filenames(hit.passage.file_id)))),
                            rank) for rank, hit in enumerate(hits, 1)]
    room = budget - len(head) - len(tail)
    kept, used = [], 0
    for piece in pieces:  # best first: drop from the bottom of the ranking
        if used + len(piece.token_ids) <= room:
            kept.append(piece)
            used += len(piece.token_ids)
    ordered = order_for_cache(kept, mode=order, popularity=popularity, cached_prefix_len=cached_prefix_len,
                              prefix_token_ids=head)
    popularity.record(p.id for p in ordered)
    by_id = {hit.passage.id: hit for hit in hits}
    ids = list(head)
    for piece in ordered:
        ids += piece.token_ids
    return RagPrompt(token_ids=ids + tail, hits=[by_id[p.id] for p in ordered], head_tokens=len(head),
                     passage_tokens=used)
