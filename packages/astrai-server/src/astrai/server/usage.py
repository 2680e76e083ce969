"""Token usage: counted once from a generation's choices, written in either OpenAI shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from astrai.server.choice import ChoiceState


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of a generation summed over its choices (the one place they are summed)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @classmethod
    def of(cls, choices: Sequence[ChoiceState]) -> TokenUsage:
        return cls(prompt_tokens=sum(len(c.prompt_ids) for c in choices),
                   completion_tokens=sum(len(c.token_ids) for c in choices),
                   cached_tokens=sum(c.num_cached_tokens for c in choices))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def completions_body(self) -> dict:
        """Chat and legacy completions: `usage` with prompt/completion tokens."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}

    def responses_body(self) -> dict:
        """The Responses API: `usage` with input/output tokens."""
        return {"input_tokens": self.prompt_tokens, "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": self.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.total_tokens}
