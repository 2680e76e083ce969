"""Small timing and statistics helpers shared by the sections."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager


@contextmanager
def stopwatch():
    """`with stopwatch() as t: ...; t()` gives elapsed seconds (frozen once the block exits)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for an empty list."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: list[float]) -> float | None:
    return percentile(values, 50.0)


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")
