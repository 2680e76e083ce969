"""astrai.scheduler — the Engine: continuous batching over paged KV, prefix reuse, sampling."""

from .engine import Engine
from .errors import EngineError, PromptTooLongError
from .outputs import RequestMetrics, RequestOutput
from .params import SamplingParams
from .trace import JsonlTraceWriter, TraceEvent

__all__ = [
    "Engine",
    "EngineError",
    "JsonlTraceWriter",
    "PromptTooLongError",
    "RequestMetrics",
    "RequestOutput",
    "SamplingParams",
    "TraceEvent",
]
