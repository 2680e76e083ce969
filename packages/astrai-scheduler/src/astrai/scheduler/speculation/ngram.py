"""Prompt lookup: continue the text the way it went the last time the same tokens appeared.

The request's own prompt and output are searched for its last tokens, longest match first
(down to `min_match` tokens); the most recent of the longest matches is copied forward. It
keeps nothing across requests and gives no probabilities: the engine weighs its drafts by the
request's observed acceptance rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from .context_index import ContextIndexes
from .proposer import NO_DRAFT, Draft, DraftContext
from .suffix_index import deepest_matches

MAX_MATCH = 32  # tokens compared when ranking matches by length
CANDIDATES = 64  # most recent occurrences of the last `min_match` tokens considered


class PromptLookupProposer:
    name = "ngram"

    def __init__(self, min_match: int = 2) -> None:
        self._contexts = ContextIndexes(min_match)

    def propose(self, requests: Sequence[DraftContext], max_tokens: Sequence[int]) -> list[Draft]:
        drafts = []
        for req, limit in zip(requests, max_tokens, strict=True):
            index, context = self._contexts.sync(req)
            if limit <= 0:
                drafts.append(NO_DRAFT)
                continue
            _, cands = deepest_matches([index], context, limit=CANDIDATES, max_match=MAX_MATCH)
            if not cands:
                drafts.append(NO_DRAFT)
                continue
            best = cands[0]  # the most recent occurrence among the longest matches
            drafts.append(Draft(best.seq[best.pos : best.pos + limit]))
        return drafts

    def finish(self, request: DraftContext) -> None:
        self._contexts.drop(request)

    @property
    def held_tokens(self) -> int:
        return 0

    @property
    def capacity_tokens(self) -> int:
        return 0
