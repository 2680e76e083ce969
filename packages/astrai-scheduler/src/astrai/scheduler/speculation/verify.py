"""Verification: every position of a draft is sampled as plain decoding would sample it.

A verification chunk feeds the request's last token and the k draft tokens in one forward;
the k + 1 logits rows become k + 1 sampling rows. Row j sees what decoding would see after
the draft's first j tokens: the output so far plus draft[:j] (penalties), the stop-token ban
until min_tokens, the grammar's mask after draft[:j] and the random number of output position
len(output) + j. The target's tokens are then appended one by one while they equal the draft:
the first that differs (or the one after the whole draft) is the target's own next token, so
the text is what decoding without speculation produces, token for token.
"""

from __future__ import annotations

import torch

from ..params import SamplingParams
from ..request import Request


class DraftPosition:
    """Sampling row for position j of a request's verification chunk (a `SamplingRow`)."""

    __slots__ = ("request", "draft", "ahead", "params", "prompt_token_ids", "grammar_bitmask", "tokens_left")

    constraint = None  # the grammar's masks come precomputed (grammar_bitmask)

    def __init__(self, request: Request, draft: list[int], ahead: int, bitmask: torch.Tensor | None) -> None:
        self.request = request
        self.draft = draft
        self.ahead = ahead
        self.params: SamplingParams = request.params
        self.prompt_token_ids = request.prompt_token_ids
        self.grammar_bitmask = bitmask
        self.tokens_left = request.tokens_left - ahead

    @property
    def output_token_ids(self) -> list[int]:
        """The output this position follows: the request's, then draft[:ahead] (built only when
        asked: the sampler reads it for penalties alone)."""
        out = self.request.output_token_ids
        return out + self.draft[: self.ahead] if self.ahead else out

    @property
    def random_key(self) -> tuple[int, int, int]:
        req = self.request
        return req.sample_seed, req.index, len(req.output_token_ids) + self.ahead

    def banned_token_ids(self) -> list[int]:
        return self.request.banned_token_ids(self.ahead)


def draft_rows(request: Request, draft: list[int]) -> list[DraftPosition]:
    """The len(draft) + 1 sampling rows of a verification chunk, in position order."""
    masks = None
    if request.constraint is not None:
        masks = request.constraint.draft_masks(draft, request.tokens_left)
    return [DraftPosition(request, draft, j, masks[j] if masks is not None else None) for j in range(len(draft) + 1)]
