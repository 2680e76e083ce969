"""What callers receive: RequestOutput deltas and the final RequestMetrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestMetrics:
    """Timestamps (time.monotonic()) and latencies of one request, set on its final output."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    inter_token_latencies: list[float] = field(default_factory=list)
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    num_cached_tokens: int = 0

    @property
    def queue_time(self) -> float | None:
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time

    @property
    def ttft(self) -> float | None:
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time

    @property
    def e2e_latency(self) -> float | None:
        if self.finished_time is None:
            return None
        return self.finished_time - self.arrival_time

    def to_dict(self) -> dict[str, Any]:
        return {
            "arrival_time": self.arrival_time,
            "first_scheduled_time": self.first_scheduled_time,
            "first_token_time": self.first_token_time,
            "finished_time": self.finished_time,
            "queue_time": self.queue_time,
            "ttft": self.ttft,
            "e2e_latency": self.e2e_latency,
            "inter_token_latencies": list(self.inter_token_latencies),
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_generation_tokens": self.num_generation_tokens,
            "num_cached_tokens": self.num_cached_tokens,
        }


@dataclass
class RequestOutput:
    """One step's news about a request.

    Streaming APIs yield deltas (`text`/`token_ids` hold only what is new); `generate` returns
    one complete output per request. The last output has `finished=True` and `finish_reason`.
    """

    request_id: str
    index: int = 0  # which of the prompt's n samples (SamplingParams.n) this output belongs to
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    prompt_token_ids: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None
    error: str | None = None
    metrics: RequestMetrics | None = None
    stop_reason: str | int | None = None  # the stop string or stop token that ended the request
    # SamplingParams.prompt_logprobs: per prompt token {token_id, logprob, top}, the first None;
    # set on the final output (streaming: on the first delta after the prompt).
    prompt_logprobs: list[dict[str, Any] | None] | None = None
