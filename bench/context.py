"""What a section gets: the scale, the switches from the command line, and earlier results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from bench.astrai_options import AstraiOptions
from bench.config import Scale
from bench.models import DEFAULT_MODEL, BenchModel, bench_model


@dataclass
class Context:
    scale: Scale
    quick: bool
    skip_peers: bool
    astrai: AstraiOptions = field(default_factory=AstraiOptions)
    model: BenchModel = field(default_factory=lambda: bench_model(DEFAULT_MODEL))
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # the same for AstrAI and llama.cpp
    results: dict = field(default_factory=dict)  # section name -> its result, as they finish
    deadline: float = float("inf")  # time.monotonic() after which remaining work is skipped
    _path: str | None = field(default=None, init=False, repr=False)  # model_path(), resolved once

    def wants_peers(self) -> bool:
        return not self.skip_peers

    def model_path(self) -> str:
        """The run's GGUF (--model): every system in every section runs this one file."""
        if self._path is None:
            self._path = str(self.model.path())
        return self._path

    def out_of_time(self) -> str | None:
        """Why to skip the next piece of work, or None. Keeps a run inside its time budget on a
        busy shared machine; skipped work is reported as such, never silently dropped."""
        if time.monotonic() > self.deadline:
            return "the run's time budget (--budget-min) was used up"
        return None
