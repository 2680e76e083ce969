"""What a section gets: the scale, the switches from the command line, and earlier results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.config import Scale


@dataclass
class Context:
    scale: Scale
    quick: bool
    skip_peers: bool
    results: dict = field(default_factory=dict)  # section name -> its result, as they finish
    deadline: float = float("inf")  # time.monotonic() after which remaining work is skipped

    def wants_peers(self) -> bool:
        return not self.skip_peers

    def out_of_time(self) -> str | None:
        """Why to skip the next piece of work, or None. Keeps a run inside its time budget on a
        busy shared machine; skipped work is reported as such, never silently dropped."""
        if time.monotonic() > self.deadline:
            return "the run's time budget (--budget-min) was used up"
        return None
