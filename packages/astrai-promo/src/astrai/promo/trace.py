"""The trace file: one JSON document describing a live engine run.

`astrai-promo record` writes it and every scene is drawn from it, so it is validated once, on
load, with messages that name the file, the field and the problem instead of a KeyError deep
inside a Manim scene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACE_FORMAT = "astrai-trace"
TRACE_VERSION = 1

_PAGE_EVENT_KINDS = ("allocated", "shared", "copied", "freed", "evicted")


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

    @property
    def num_pages(self) -> int:
        return int(self.engine["num_pages"])

    @property
    def page_size(self) -> int:
        return int(self.engine["page_size"])

    def to_dict(self) -> dict[str, Any]:
        return {
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
    if version != TRACE_VERSION:
        raise _fail(
            source,
            f"trace format version {version!r} is not supported; this astrai-promo reads version "
            f"{TRACE_VERSION} (record the trace again with this version)",
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

    steps = [_normalize_step(s, i, engine["num_pages"], source) for i, s in enumerate(_require(data, "steps", list, "", source))]
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
    )


def _normalize_step(step: Any, index: int, num_pages: int, source: str) -> dict[str, Any]:
    """Check one TraceEvent dict and fill optional keys, so beats never test for presence."""
    where = f"steps[{index}]"
    _require(step, "step", int, where, source)
    _require(step, "time", _NUMBER, where, source)
    prefill = _require(step, "prefill", list, where, source)
    for j, entry in enumerate(prefill):
        _require(entry, "request_id", str, f"{where}.prefill[{j}]", source)
        _require(entry, "num_tokens", int, f"{where}.prefill[{j}]", source)
    decode = _require(step, "decode", list, where, source)
    if not all(isinstance(r, str) for r in decode):
        raise _fail(source, f"field {where}.decode must be a list of request ids")
    finished = _require(step, "finished", list, where, source)
    for j, entry in enumerate(finished):
        _require(entry, "request_id", str, f"{where}.finished[{j}]", source)
    pages = _require(step, "pages", dict, where, source)
    out = dict(step)
    out["pages"] = {}
    for kind in _PAGE_EVENT_KINDS:
        value = pages.get(kind, [])
        if not isinstance(value, list):
            raise _fail(source, f"field {where}.pages.{kind} must be a list")
        out["pages"][kind] = value
    for kind in ("allocated", "shared", "freed", "evicted"):
        for page in out["pages"][kind]:
            if not isinstance(page, int) or not 0 <= page < num_pages:
                raise _fail(source, f"{where}.pages.{kind} holds page {page!r}, outside the pool of {num_pages}")
    for pair in out["pages"]["copied"]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, int) for p in pair)):
            raise _fail(source, f"{where}.pages.copied entries must be [source, destination] page pairs")
    _require(step, "num_free_pages", int, where, source)
    tables = step.get("page_tables", {})
    if not isinstance(tables, dict):
        raise _fail(source, f"field {where}.page_tables must be an object")
    out["page_tables"] = {str(k): list(v) for k, v in tables.items()}
    out["prefill"] = [
        {"cached_tokens": 0, "start": 0, **entry} for entry in prefill
    ]
    out["finished"] = [{"finish_reason": None, "output_tokens": None, **entry} for entry in finished]
    out.setdefault("arrived", [])
    out.setdefault("preempted", [])
    out.setdefault("phases_ms", {})
    out.setdefault("num_waiting", 0)
    out.setdefault("num_running", len(decode) + len(prefill))
    out.setdefault("num_cached_pages", 0)
    out.setdefault("num_pages", num_pages)
    return out
