"""What a section gets: the scale, the switches from the command line, and earlier results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from bench.astrai_options import AstraiOptions
from bench.config import Scale


@dataclass
class Context:
    scale: Scale
    quick: bool
    skip_peers: bool
    astrai: AstraiOptions = field(default_factory=AstraiOptions)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # the same for AstrAI and llama.cpp
    results: dict = field(default_factory=dict)  # section name -> its result, as they finish
    deadline: float = float("inf")  # time.monotonic() after which remaining work is skipped

    def wants_peers(self) -> bool:
        return not self.skip_peers

    def model_path(self) -> str:
        """The bundled GGUF: every system in every section runs this one file."""
        from astrai.model import bundled_gguf_path

        return str(bundled_gguf_path())

    def out_of_time(self) -> str | None:
        """Why to skip the next piece of work, or None. Keeps a run inside its time budget on a
        busy shared machine; skipped work is reported as such, never silently dropped."""
        if time.monotonic() > self.deadline:
            return "the run's time budget (--budget-min) was used up"
        return None
