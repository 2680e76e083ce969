"""StepTimer: where one engine step's time goes, as laps charged to named phases.

`lap(phase)` charges the time since the previous lap to `phase`; a phase may be charged more
than once per step (the scheduler runs before the forward and again after sampling). Two
perf_counter calls and a dict update per lap: cheap enough to run on every step.
"""

from __future__ import annotations

import time

from .trace import PHASES


class StepTimer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[phase] += (now - self._last) * 1000.0
        self._last = now
