"""What one choice of a generation (one prompt, one sample) has produced so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from astrai.scheduler import RequestMetrics


@dataclass
class ChoiceState:
    """A choice's accumulated output, filled in delta by delta as the engine streams it."""

    prompt_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    metrics: RequestMetrics | None = None
    error: str | None = None
    prompt_logprobs: list[dict | None] | None = None
