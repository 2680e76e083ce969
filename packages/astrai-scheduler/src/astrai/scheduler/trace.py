"""The per-step trace schema, defined once: `TraceEvent`, its dict form, and its validator.

The engine builds one `TraceEvent` per step; `to_dict()` is the JSON form (docs/INTERFACES.md)
that `JsonlTraceWriter` writes and astrai-promo stores in its trace files. `TraceEvent.from_dict`
validates such a dict (naming the first bad field), fills optional keys, and reads version-1
events, whose phase names said less than they timed, by mapping them onto today's phases.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypedDict

from astrai.cache import PAGE_EVENT_KINDS

TRACE_EVENT_VERSION = 2
PHASES = ("schedule", "build_batch", "forward", "sample")
"""What `phases_ms` times, in step order (milliseconds, disjoint, summing to the step):

- `schedule`: the scheduler's bookkeeping: aborts, arrivals, admission, page reservation and
  preemption, and (after sampling) releasing finished requests' pages to the prefix cache;
- `build_batch`: turning the plan into one ragged ForwardBatch (token ids, slots, tables);
- `forward`: the model forward over every chunk of the step;
- `sample`: sampling the next tokens, appending them, stop checks and handing outputs out.
"""

V1_PHASES = {"cleanup": "schedule", "refill": "schedule", "prefill": "build_batch", "forward": "forward",
             "decode": "sample"}
"""Version 1's phase names and what they timed: "prefill" was batch building, "decode" sampling."""


class TraceSchemaError(ValueError):
    """A trace event dict that does not follow the schema; the message names the field."""


class PrefillRecord(TypedDict):
    request_id: str
    num_tokens: int  # tokens computed this step
    cached_tokens: int  # prompt tokens found in the prefix cache (on the step that admitted it)
    start: int  # first position computed this step


class SpeculationRecord(TypedDict):
    request_id: str
    proposed: int  # draft tokens verified this step (after the request's last token)
    accepted: int  # of which equalled the target's own tokens (a run from the first)


class FinishedRecord(TypedDict):
    request_id: str
    finish_reason: str | None
    output_tokens: int | None


@dataclass
class TraceEvent:
    """What one engine step did."""

    step: int
    time: float
    phases_ms: dict[str, float] = field(default_factory=dict)  # keys from PHASES
    prefill: list[PrefillRecord] = field(default_factory=list)
    decode: list[str] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    finished: list[FinishedRecord] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    pages: dict[str, list[Any]] = field(default_factory=dict)  # PAGE_EVENT_KINDS -> pages ("copied": [src, dst])
    page_tables: dict[str, list[int]] = field(default_factory=dict)
    speculation: list[SpeculationRecord] = field(default_factory=list)  # verification chunks (also in `decode`)
    num_waiting: int = 0
    num_running: int = 0
    num_free_pages: int = 0
    num_cached_pages: int = 0
    num_pages: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; `speculation` appears only on steps that verified drafts."""
        out = {
            "step": self.step,
            "time": self.time,
            "phases_ms": dict(self.phases_ms),
            "prefill": [dict(p) for p in self.prefill],
            "decode": list(self.decode),
            "arrived": list(self.arrived),
            "finished": [dict(f) for f in self.finished],
            "preempted": list(self.preempted),
            "pages": {k: [list(p) if isinstance(p, (list, tuple)) else p for p in v] for k, v in self.pages.items()},
            "page_tables": {k: list(v) for k, v in self.page_tables.items()},
            "num_waiting": self.num_waiting,
            "num_running": self.num_running,
            "num_free_pages": self.num_free_pages,
            "num_cached_pages": self.num_cached_pages,
            "num_pages": self.num_pages,
        }
        if self.speculation:
            out["speculation"] = [dict(r) for r in self.speculation]
        return out

    @classmethod
    def from_dict(
        cls, data: Any, *, version: int = TRACE_EVENT_VERSION, num_pages: int | None = None, where: str = "event"
    ) -> TraceEvent:
        """Validate a `to_dict()` dict of schema `version` (1 or 2) and build the event.

        Optional keys are filled in; page ids are checked against `num_pages` (default: the
        event's own). Raises TraceSchemaError naming `where` and the field.
        """
        return _parse(data, version, num_pages, where)


# ---- validation --------------------------------------------------------------------------

_NUMBER = (int, float)


def _get(obj: Any, key: str, kinds: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if not isinstance(obj, Mapping):
        raise TraceSchemaError(f"{where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        if default is ...:
            raise TraceSchemaError(f"missing field {where}.{key}")
        return default
    value = obj[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
        raise TraceSchemaError(f"field {where}.{key} must be {names}, got {type(value).__name__}")
    return value


def _ids(obj: Any, key: str, where: str, *, required: bool = False) -> list[str]:
    value = _get(obj, key, list, where, ... if required else [])
    if not all(isinstance(r, str) for r in value):
        raise TraceSchemaError(f"field {where}.{key} must be a list of request ids")
    return list(value)


def _phases(raw: Mapping[str, Any], version: int, where: str) -> dict[str, float]:
    names = V1_PHASES if version == 1 else {p: p for p in PHASES}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in names:
            raise TraceSchemaError(f"{where}.phases_ms has unknown phase {key!r}; version {version} phases are "
                                   f"{sorted(names)}")
        if isinstance(value, bool) or not isinstance(value, _NUMBER):
            raise TraceSchemaError(f"field {where}.phases_ms.{key} must be a number, got {type(value).__name__}")
        out[names[key]] = out.get(names[key], 0.0) + float(value)
    return out


def _parse(data: Any, version: int, num_pages: int | None, where: str) -> TraceEvent:
    if version not in (1, TRACE_EVENT_VERSION):
        raise TraceSchemaError(f"trace event version {version!r} is not supported; this astrai-scheduler reads "
                               f"versions 1 and {TRACE_EVENT_VERSION}")
    step = _get(data, "step", int, where)
    prefill: list[PrefillRecord] = []
    for j, entry in enumerate(_get(data, "prefill", list, where)):
        at = f"{where}.prefill[{j}]"
        prefill.append(PrefillRecord(request_id=_get(entry, "request_id", str, at),
                                     num_tokens=_get(entry, "num_tokens", int, at),
                                     cached_tokens=_get(entry, "cached_tokens", int, at, 0),
                                     start=_get(entry, "start", int, at, 0)))
    decode = _ids(data, "decode", where, required=True)
    finished: list[FinishedRecord] = []
    for j, entry in enumerate(_get(data, "finished", list, where)):
        at = f"{where}.finished[{j}]"
        finished.append(FinishedRecord(request_id=_get(entry, "request_id", str, at),
                                       finish_reason=_get(entry, "finish_reason", (str, type(None)), at, None),
                                       output_tokens=_get(entry, "output_tokens", (int, type(None)), at, None)))
    pool = num_pages if num_pages is not None else _get(data, "num_pages", int, where, None)
    raw_pages = _get(data, "pages", dict, where)
    pages: dict[str, list[Any]] = {}
    for kind in PAGE_EVENT_KINDS:
        value = _get(raw_pages, kind, list, f"{where}.pages", [])
        if kind == "copied":
            if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(x) for x in p) for p in value):
                raise TraceSchemaError(f"{where}.pages.copied entries must be [source, destination] page pairs")
            pages[kind] = [list(p) for p in value]
            continue
        for page in value:
            if not _is_int(page) or (pool is not None and not 0 <= page < pool):
                raise TraceSchemaError(f"{where}.pages.{kind} holds page {page!r}, outside the pool of {pool}")
        pages[kind] = list(value)
    unknown = sorted(set(raw_pages) - set(PAGE_EVENT_KINDS))
    if unknown:
        raise TraceSchemaError(f"{where}.pages has unknown event kind {unknown[0]!r}; kinds are {list(PAGE_EVENT_KINDS)}")
    speculation: list[SpeculationRecord] = []
    for j, entry in enumerate(_get(data, "speculation", list, where, [])):
        at = f"{where}.speculation[{j}]"
        record = SpeculationRecord(request_id=_get(entry, "request_id", str, at),
                                   proposed=_get(entry, "proposed", int, at), accepted=_get(entry, "accepted", int, at))
        if not 0 <= record["accepted"] <= record["proposed"]:
            raise TraceSchemaError(f"{at}: accepted ({record['accepted']}) must lie in [0, proposed "
                                   f"({record['proposed']})]")
        speculation.append(record)
    tables: dict[str, list[int]] = {}
    for rid, table in _get(data, "page_tables", dict, where, {}).items():
        if not isinstance(table, list) or not all(_is_int(p) for p in table):
            raise TraceSchemaError(f"field {where}.page_tables.{rid} must be a list of page ids")
        tables[str(rid)] = list(table)
    return TraceEvent(
        step=step,
        time=float(_get(data, "time", _NUMBER, where)),
        phases_ms=_phases(_get(data, "phases_ms", dict, where, {}), version, where),
        prefill=prefill,
        decode=decode,
        arrived=_ids(data, "arrived", where),
        finished=finished,
        preempted=_ids(data, "preempted", where),
        pages=pages,
        page_tables=tables,
        speculation=speculation,
        num_waiting=_get(data, "num_waiting", int, where, 0),
        num_running=_get(data, "num_running", int, where, len(decode) + len(prefill)),
        num_free_pages=_get(data, "num_free_pages", int, where),
        num_cached_pages=_get(data, "num_cached_pages", int, where, 0),
        num_pages=pool if pool is not None else 0,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JsonlTraceWriter:
    """A trace subscriber writing one JSON object per line; use as `engine.subscribe(writer)`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: TraceEvent) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":"))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> JsonlTraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
