"""SamplingParams: how one request is decoded, with vLLM's field names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .structured import StructuredOutputsParams

MAX_LOGIT_BIAS_ENTRIES = 300  # OpenAI's limit
MAX_PROMPT_LOGPROBS = 20


@dataclass
class SamplingParams:
    """Per-request decoding controls.

    `temperature=0` is greedy. `top_k <= 0` (or -1, vLLM's spelling) disables top-k.
    `max_tokens=None` means "up to the context window". Invalid values raise ValueError
    naming the field, so bad user input never reaches the engine thread.

    `speculation=False` opts this request out of speculative decoding (its text is the same
    either way; only its speed differs). `tenant` names who the request belongs to (the server
    passes a digest of its API key): cross-request state that only changes speed, the suffix
    speculation's store of earlier outputs, is kept per tenant, so one tenant's outputs never
    shape another's proposals or timing.
    """

    max_tokens: int | None = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    n: int = 1
    logit_bias: dict[int, float] | None = None
    structured_outputs: StructuredOutputsParams | None = None
    speculation: bool = True
    tenant: str | None = None
    _stop_list: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_int("max_tokens", self.max_tokens, minimum=1, optional=True)
        _check_int("min_tokens", self.min_tokens, minimum=0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
            )
        _check_float("temperature", self.temperature, low=0.0)
        _check_int("top_k", self.top_k, minimum=-1)
        _check_float("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        _check_float("min_p", self.min_p, low=0.0, high=1.0)
        _check_float("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        _check_float("presence_penalty", self.presence_penalty, low=-2.0, high=2.0)
        _check_float("frequency_penalty", self.frequency_penalty, low=-2.0, high=2.0)
        _check_int("seed", self.seed, minimum=None, optional=True)
        _check_int("logprobs", self.logprobs, minimum=0, optional=True)
        _check_int("prompt_logprobs", self.prompt_logprobs, minimum=0, optional=True)
        if self.prompt_logprobs is not None and self.prompt_logprobs > MAX_PROMPT_LOGPROBS:
            raise ValueError(f"prompt_logprobs must be <= {MAX_PROMPT_LOGPROBS}, got {self.prompt_logprobs}")
        _check_int("n", self.n, minimum=1)
        self.logit_bias = _normalise_bias(self.logit_bias)
        if self.structured_outputs is not None and not isinstance(self.structured_outputs, StructuredOutputsParams):
            raise ValueError("structured_outputs must be a StructuredOutputsParams")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        if not isinstance(self.speculation, bool):
            raise ValueError(f"speculation must be a bool, got {self.speculation!r}")
        if self.tenant is not None and not isinstance(self.tenant, str):
            raise ValueError(f"tenant must be a string or None, got {self.tenant!r}")
        self._stop_list = _normalise_stop(self.stop)
        if self.stop_token_ids is not None:
            if isinstance(self.stop_token_ids, (str, bytes)) or not hasattr(self.stop_token_ids, "__iter__"):
                raise ValueError(f"stop_token_ids must be a list of ints, got {self.stop_token_ids!r}")
            ids = list(self.stop_token_ids)
            for t in ids:
                if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                    raise ValueError(f"stop_token_ids must hold non-negative ints, got {t!r}")
            self.stop_token_ids = ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def stop_strings(self) -> list[str]:
        """`stop` as a list (empty if none)."""
        return self._stop_list

    @property
    def truncates(self) -> bool:
        """Whether top-k, top-p or min-p cut the distribution before sampling."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    @property
    def needs_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


def _normalise_bias(bias: object) -> dict[int, float] | None:
    """OpenAI's logit_bias: token id -> a bias in [-100, 100] added to that token's logit."""
    if bias is None:
        return None
    if not isinstance(bias, dict):
        raise ValueError(f"logit_bias must map token ids to numbers, got {type(bias).__name__}")
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise ValueError(f"logit_bias may hold at most {MAX_LOGIT_BIAS_ENTRIES} entries, got {len(bias)}")
    out: dict[int, float] = {}
    for token, value in bias.items():
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ValueError(f"logit_bias keys must be non-negative token ids, got {token!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100.0 <= float(value) <= 100.0:
            raise ValueError(f"logit_bias values must be numbers in [-100, 100], got {value!r} for token {token}")
        out[token] = float(value)
    return out or None


def _check_int(name: str, value: object, *, minimum: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def _normalise_stop(stop: object) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        items = [stop]
    elif isinstance(stop, (list, tuple)):
        items = list(stop)
    else:
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
    for s in items:
        if not isinstance(s, str):
            raise ValueError(f"stop must hold strings, got {s!r}")
        if s == "":
            raise ValueError("stop strings must not be empty")
    return items
