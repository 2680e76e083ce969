"""`EngineClient`: what a front end (the HTTP server, promo, a Ray Serve replica) needs of an engine.

`Engine` implements it. Front ends type against this protocol, not the concrete class, so a
stand-in (another process's engine behind a proxy, a replica router) can serve them too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, runtime_checkable

from astrai.model import ModelConfig, Tokenizer

from .outputs import RequestOutput
from .params import SamplingParams
from .request import Sink
from .trace import TraceEvent

Prompt = str | Sequence[int]
TraceCallback = Callable[[TraceEvent], None]


class EngineStats(TypedDict):
    """`engine.stats()`: a snapshot for metrics endpoints, read without stopping the engine."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1, cached-but-evictable pages count as free
    prompt_tokens_total: int
    generation_tokens_total: int
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found cached
    num_preemptions_total: int
    num_pages: int
    num_free_pages: int
    num_cached_pages: int
    page_size: int
    steps: int
    requests_finished_total: dict[str, int]  # finish reason -> count
    # speculative decoding (vLLM's spec_decode_* counters), totals since start
    spec_decode_num_drafts: int  # verification chunks
    spec_decode_num_draft_tokens: int  # proposed tokens verified
    spec_decode_num_accepted_tokens: int  # of which accepted
    spec_decode_num_accepted_tokens_per_pos: dict[int, int]  # draft position -> drafts accepted there
    spec_decode_suffix_tokens: int  # tokens the cross-request suffix store holds now
    spec_decode_suffix_capacity_tokens: int  # its bound (the speculation_suffix_tokens setting)


@dataclass(frozen=True)
class EngineInfo:
    """`engine.describe()`: how an engine is set up, for logs, health pages and trace files."""

    model: str  # config.name
    dtype: str  # "bfloat16" | "float32" | ...
    device: str
    max_model_len: int  # longest prompt + output, capped by the KV pool
    max_num_seqs: int
    max_num_batched_tokens: int
    page_size: int
    num_pages: int
    prefix_cache: bool
    scheduling: str  # "continuous" | "static"
    speculation: str = "off"  # "off" | "ngram" | "suffix"
    modules: dict[str, str] = field(default_factory=dict)  # layer -> the module implementing it
    weights: str = ""  # how the weights are held, e.g. "Q4_1+Q8_0 (packed), float32"
    kv_cache_dtype: str = ""
    forward: str = "torch"  # "native": one C++ call per step; "torch": the Python layers
    kernels: str = "torch"  # the native kernel variant ("avx2" | "avx512" | "amx"), or "torch"


@runtime_checkable
class EngineClient(Protocol):
    """The engine surface the server and promo use (see docs/INTERFACES.md for semantics)."""

    tokenizer: Tokenizer
    config: ModelConfig
    max_model_len: int  # prompt + output never exceed this (model length capped by the KV pool)
    max_num_seqs: int  # requests that run in one batch

    def add_request(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None,
        priority: int = 0, *, sink: Sink | None = None, stream: bool = False,
    ) -> str: ...

    def abort(self, request_id: str) -> None: ...

    def generate(
        self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]: ...

    def generate_async(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None, priority: int = 0,
    ) -> AsyncIterator[RequestOutput]: ...

    def lookup_prefix(self, token_ids: Sequence[int]) -> int: ...

    def subscribe(self, callback: TraceCallback) -> Callable[[], None]: ...

    def stats(self) -> EngineStats: ...

    def describe(self) -> EngineInfo: ...

    def wait_idle(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = 30.0) -> None: ...
