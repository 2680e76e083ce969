"""astrai.scheduler — the Engine: continuous batching over paged KV, prefix reuse, sampling."""

# the model types EngineClient exposes, re-exported for front ends to name
from astrai.model import ModelConfig, Tokenizer

from .client import EngineClient, EngineInfo, EngineStats
from .engine import Engine
from .errors import EngineError, FieldError, PromptTooLongError
from .grammar import GrammarError
from .memory import kv_budget_bytes, pages_in_budget
from .outputs import RequestMetrics, RequestOutput
from .params import SamplingParams
from .structured import StructuredOutputsParams
from .trace import (
    PHASES,
    TRACE_EVENT_VERSION,
    V1_PHASES,
    FinishedRecord,
    JsonlTraceWriter,
    PrefillRecord,
    SpeculationRecord,
    TraceEvent,
    TraceSchemaError,
)

__all__ = [
    "PHASES",
    "TRACE_EVENT_VERSION",
    "V1_PHASES",
    "Engine",
    "EngineClient",
    "EngineError",
    "EngineInfo",
    "EngineStats",
    "FieldError",
    "FinishedRecord",
    "GrammarError",
    "JsonlTraceWriter",
    "ModelConfig",
    "PrefillRecord",
    "PromptTooLongError",
    "RequestMetrics",
    "RequestOutput",
    "SamplingParams",
    "SpeculationRecord",
    "StructuredOutputsParams",
    "Tokenizer",
    "TraceEvent",
    "TraceSchemaError",
    "kv_budget_bytes",
    "pages_in_budget",
]
