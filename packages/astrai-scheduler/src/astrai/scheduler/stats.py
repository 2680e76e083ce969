"""Engine-wide counters, written by the engine thread and read by metrics endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EngineCounters:
    steps: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    finished_by_reason: dict[str, int] = field(default_factory=dict)
