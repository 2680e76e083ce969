"""Per-step trace events and a JSONL writer that subscribes to them."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass
class TraceEvent:
    """What one engine step did. `to_dict()` is the schema in docs/INTERFACES.md."""

    step: int
    time: float
    phases_ms: dict[str, float] = field(default_factory=dict)
    prefill: list[dict[str, Any]] = field(default_factory=list)
    decode: list[str] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    pages: dict[str, list[Any]] = field(default_factory=dict)
    page_tables: dict[str, list[int]] = field(default_factory=dict)
    num_waiting: int = 0
    num_running: int = 0
    num_free_pages: int = 0
    num_cached_pages: int = 0
    num_pages: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "time": self.time,
            "phases_ms": dict(self.phases_ms),
            "prefill": [dict(p) for p in self.prefill],
            "decode": list(self.decode),
            "arrived": list(self.arrived),
            "finished": [dict(f) for f in self.finished],
            "preempted": list(self.preempted),
            "pages": {k: list(v) for k, v in self.pages.items()},
            "page_tables": {k: list(v) for k, v in self.page_tables.items()},
            "num_waiting": self.num_waiting,
            "num_running": self.num_running,
            "num_free_pages": self.num_free_pages,
            "num_cached_pages": self.num_cached_pages,
            "num_pages": self.num_pages,
        }


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
