"""The proposer seam of speculative decoding: who guesses the next tokens.

A proposer only guesses; verification (one forward over the guesses, acceptance by the
target's own sampling) is the engine's and never depends on who guessed. The n-gram and
suffix proposers here look tokens up in text already seen; a draft-model proposer would run a
small model in `propose` (one batched call for every request of the step) and free its state
in `finish`, with nothing else to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..params import SamplingParams


class DraftContext(Protocol):
    """What a proposer may read about a request (the engine's `Request` provides it)."""

    request_id: str
    params: SamplingParams  # `params.tenant` scopes anything learnt across requests
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # verified tokens only


@dataclass(frozen=True)
class Draft:
    """Proposed next tokens, and optionally how likely each is to be accepted.

    `probs[i]` estimates P(token i is accepted | tokens before it were); None: the proposer has
    no estimate, and the engine uses the request's observed acceptance rate instead.
    """

    tokens: list[int]
    probs: list[float] | None = None

    def __post_init__(self) -> None:
        if self.probs is not None and len(self.probs) != len(self.tokens):
            raise ValueError(f"a draft of {len(self.tokens)} tokens needs as many probabilities, got {len(self.probs)}")


NO_DRAFT = Draft([])


@runtime_checkable
class Proposer(Protocol):
    """Guesses the next tokens of running requests."""

    name: str

    def propose(self, requests: Sequence[DraftContext], max_tokens: Sequence[int]) -> list[Draft]:
        """One draft per request, each at most `max_tokens[i]` tokens long (may be empty)."""
        ...

    def finish(self, request: DraftContext) -> None:
        """The request has ended (any reason): drop what is kept for it, learn from its output."""
        ...

    @property
    def held_tokens(self) -> int:
        """Tokens kept across requests (the bounded store; 0 if the proposer keeps none)."""
        ...

    @property
    def capacity_tokens(self) -> int:
        """The bound on `held_tokens` (0 if the proposer keeps nothing across requests)."""
        ...
