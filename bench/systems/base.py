"""What every benchmarked system reports, so sections and the report treat them alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bench.timing import rate
from bench.workload import Request


@dataclass
class OfflineResult:
    """Offline throughput: useful tokens (what was asked for) over wall-clock seconds."""

    num_requests: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    computed_tokens: int | None = None  # incl. padding / overshoot a static batch wastes
    notes: list[str] = field(default_factory=list)

    @classmethod
    def asked_for(cls, requests: list[Request], seconds: float, **extra) -> OfflineResult:
        """The tokens the requests asked for (prompts plus max_tokens each) over `seconds`."""
        return cls(num_requests=len(requests), prompt_tokens=sum(len(r.prompt_token_ids) for r in requests),
                   output_tokens=sum(r.max_tokens for r in requests), seconds=seconds, **extra)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_tok_s"] = rate(self.output_tokens, self.seconds)
        d["total_tok_s"] = rate(self.prompt_tokens + self.output_tokens, self.seconds)
        d["requests_s"] = rate(self.num_requests, self.seconds)
        return d


@dataclass
class LatencyResult:
    """Batch-1: time to first token and steady decode rate after it."""

    prompt_tokens: int
    ttft_s: float
    decode_tokens: int
    decode_seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode_tok_s"] = rate(self.decode_tokens, self.decode_seconds)
        return d


class System:
    """Base class: a named system that can run the offline and latency workloads."""

    name = "system"

    def offline(self, requests: list[Request], temperature: float) -> OfflineResult:
        raise NotImplementedError

    def latency(self, prompt_ids: list[int], decode_tokens: int) -> LatencyResult:
        raise NotImplementedError

    def warmup(self) -> None:
        """One short request so one-time costs (allocation, kernel selection) stay out."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
