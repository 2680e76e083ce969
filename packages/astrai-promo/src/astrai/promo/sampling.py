"""Pick which real steps a scene shows, and how long each beat lasts.

A trace may hold thousands of steps; a scene should last 20-60 s. We never invent or merge
events: we choose a subset of the real steps, most interesting first, in trace order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def evenly(items: list[int], k: int) -> list[int]:
    """k items spread evenly over `items`, keeping both ends when k >= 2."""
    if k <= 0:
        return []
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[len(items) // 2]]
    return [items[round(j * (len(items) - 1) / (k - 1))] for j in range(k)]


def sample_indices(scores: list[int], limit: int) -> list[int]:
    """Indices of at most `limit` items: highest score class first, spread evenly inside a
    class that does not fit; items scoring 0 are never chosen. Returned in ascending order."""
    chosen: set[int] = set()
    for level in sorted({s for s in scores if s > 0}, reverse=True):
        room = limit - len(chosen)
        if room <= 0:
            break
        chosen.update(evenly([i for i, s in enumerate(scores) if s == level], room))
    return sorted(chosen)


@dataclass(frozen=True)
class Timing:
    """Seconds for a scene's fixed beats and for each step beat, and how many step beats fit."""

    fixed: tuple[float, ...]
    per_step: float
    max_steps: int


def plan_timing(fixed: tuple[float, ...], per_step: float, max_seconds: float, min_steps: int = 3) -> Timing:
    """Fit fixed beats plus as many step beats as possible into `max_seconds`.

    If even `min_steps` step beats do not fit, every beat is shortened proportionally, so a
    short test render still shows the whole story.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    base = sum(fixed)
    if base + min_steps * per_step <= max_seconds:
        return Timing(fixed, per_step, math.floor((max_seconds - base) / per_step + 1e-9))
    scale = max_seconds / (base + min_steps * per_step)
    return Timing(tuple(round(f * scale, 3) for f in fixed), round(per_step * scale, 3), min_steps)
