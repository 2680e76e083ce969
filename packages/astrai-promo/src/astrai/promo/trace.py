"""The trace file: one JSON document describing a live engine run.

`astrai-promo record` writes it and every scene is drawn from it, so it is validated once, on
load, with messages that name the file, the field and the problem instead of a KeyError deep
inside a Manim scene. Each step is checked against the engine's own trace schema
(`astrai.scheduler.TraceEvent.from_dict`), never a copy of it.

Versions: 2 (current) records phases as schedule / build_batch / forward / sample. Version 1
files, whose phases were named cleanup / refill / prefill / decode, are read by mapping those
onto what they timed (`astrai.scheduler.V1_PHASES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrai.scheduler import TraceEvent, TraceSchemaError

TRACE_FORMAT = "astrai-trace"
TRACE_VERSION = 2
READABLE_VERSIONS = {1: 1, 2: 2}  # trace file version -> the TraceEvent schema version of its steps


class TraceError(ValueError):
    """A trace file that cannot be used: unreadable, corrupt, another version, or missing fields."""


@dataclass
class Trace:
    """A validated trace. `steps` are TraceEvent dicts with every optional key filled in."""

    packages: dict[str, str]
    model: dict[str, Any]
    engine: dict[str, Any]
    requests: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    throughput: dict[str, Any]
    modules: dict[str, str] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] | None = None  # optional: a live server's vector stores and RAG cache hits

    @property
    def num_pages(self) -> int:
        return int(self.engine["num_pages"])

    @property
    def page_size(self) -> int:
        return int(self.engine["page_size"])

    def to_dict(self) -> dict[str, Any]:
        extra = {"retrieval": self.retrieval} if self.retrieval is not None else {}
        return {**extra,
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "packages": self.packages,
            "model": self.model,
            "engine": self.engine,
            "modules": self.modules,
            "workload": self.workload,
            "requests": self.requests,
            "steps": self.steps,
            "throughput": self.throughput,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "trace") -> Trace:
        """Validate a decoded trace document; raise TraceError naming the first problem."""
        return _validate(data, source)


def load_trace(path: str | Path) -> Trace:
    """Read and validate a trace file written by `astrai-promo record`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"trace file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"trace file {path} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    return _validate(data, str(path))


def save_trace(trace: Trace, path: str | Path) -> Path:
    """Write a trace as JSON (validated first, so a bad trace never reaches disk)."""
    path = Path(path)
    data = trace.to_dict()
    _validate(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# validation


def _fail(source: str, message: str) -> TraceError:
    return TraceError(f"{source}: {message}")


def _require(obj: Any, key: str, kinds: type | tuple[type, ...], where: str, source: str) -> Any:
    if not isinstance(obj, dict):
        raise _fail(source, f"{where} must be an object")
    if key not in obj:
        raise _fail(source, f"missing field {where}.{key}" if where else f"missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _fail(source, f"field {where}.{key} has the wrong type (bool)")
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise _fail(source, f"field {where}.{key} must be {names}, got {type(value).__name__}")
    return value


_NUMBER = (int, float)


def _validate(data: Any, source: str) -> Trace:
    if not isinstance(data, dict):
        raise _fail(source, f"a trace must be a JSON object, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt != TRACE_FORMAT:
        raise _fail(source, f"not an AstrAI trace (format is {fmt!r}, expected {TRACE_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise _fail(
            source,
            f"trace format version {version!r} is not supported; this astrai-promo reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (record the trace again with this version)",
        )
    packages = _require(data, "packages", dict, "", source)
    model = _require(data, "model", dict, "", source)
    for key in ("name", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "vocab_size", "num_parameters"):
        _require(model, key, (str,) if key == "name" else int, "model", source)
    engine = _require(data, "engine", dict, "", source)
    for key in ("page_size", "num_pages", "max_num_seqs"):
        if _require(engine, key, int, "engine", source) <= 0:
            raise _fail(source, f"field engine.{key} must be positive")
    _require(engine, "dtype", str, "engine", source)

    requests = _require(data, "requests", list, "", source)
    for i, req in enumerate(requests):
        where = f"requests[{i}]"
        _require(req, "request_id", str, where, source)
        _require(req, "arrival", _NUMBER, where, source)
        _require(req, "prompt_tokens", int, where, source)
        _require(req, "output_tokens", int, where, source)

    raw_steps = _require(data, "steps", list, "", source)
    steps = [_normalize_step(s, i, engine["num_pages"], READABLE_VERSIONS[version], source)
             for i, s in enumerate(raw_steps)]
    if not steps:
        raise _fail(source, "the trace has no steps (the engine never ran a step while recording)")

    throughput = _require(data, "throughput", dict, "", source)
    for mode in ("static", "continuous"):
        run = _require(throughput, mode, dict, "throughput", source)
        for key in ("tokens", "seconds", "tokens_per_s"):
            _require(run, key, _NUMBER, f"throughput.{mode}", source)
    _require(throughput, "ratio", _NUMBER, "throughput", source)

    return Trace(
        packages={str(k): str(v) for k, v in packages.items()},
        model=model,
        engine=engine,
        requests=requests,
        steps=steps,
        throughput=throughput,
        modules={str(k): str(v) for k, v in (data.get("modules") or {}).items()},
        workload=dict(data.get("workload") or {}),
        retrieval=_retrieval(data.get("retrieval"), source),
    )


def _retrieval(section: Any, source: str) -> dict[str, Any] | None:
    """The optional `retrieval` section (absent in older traces): counts and the cache-hit share."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise _fail(source, "field retrieval must be an object")
    for key in ("vector_stores", "passages", "rag_requests", "rag_prompt_tokens", "rag_cached_tokens"):
        if _require(section, key, int, "retrieval", source) < 0:
            raise _fail(source, f"field retrieval.{key} must not be negative")
    share = _require(section, "cache_hit_share", _NUMBER, "retrieval", source)
    if not 0 <= share <= 1:
        raise _fail(source, f"field retrieval.cache_hit_share must lie in [0, 1], got {share}")
    return dict(section)


def _normalize_step(step: Any, index: int, num_pages: int, version: int, source: str) -> dict[str, Any]:
    """Check one TraceEvent dict against the engine's schema and fill optional keys, so beats
    never test for presence; version-1 phases come back under today's names."""
    try:
        event = TraceEvent.from_dict(step, version=version, num_pages=num_pages, where=f"steps[{index}]")
    except TraceSchemaError as exc:
        raise _fail(source, str(exc)) from None
    return event.to_dict()
