"""StepCost: what one more row costs in a step, relative to the step itself, learnt online.

A decode step's time is close to `a + b * rows`: `a` reads the weights once (and pays the
step's fixed overhead), `b` is each row's own compute. Speculation pays where `b` is small
next to `a` (one user, memory-bound) and stops paying as rows grow (compute-bound).

The estimate must survive a noisy machine, where the same step takes twice as long when
another process wakes up. So `b` comes from consecutive steps whose row counts differ (they
ran under nearly the same load, so the load cancels in their difference), as the median of
the recent such slopes, and `a` as the median of each recent step's time minus `b` per row.
Without enough pairs among the last `window` steps (a stream of one-row steps says nothing
about `b`), or when the two do not make sense together, the answer is the prior: an estimate
that stopped speculation can never be stuck, since the steps it stopped bring no new pairs.
"""

from __future__ import annotations

from collections import deque
from statistics import median

MIN_RATIO, MAX_RATIO = 0.05, 4.0


class StepCost:
    def __init__(self, prior_ratio: float = 0.3, *, fixed: bool = False, window: int = 64, min_pairs: int = 8,
                 min_gap: int = 3) -> None:
        """`fixed`: always answer `prior_ratio` (a ratio the operator measured), learn nothing.
        Pairs of consecutive steps count when their row counts differ by `min_gap` or more."""
        if not MIN_RATIO <= prior_ratio <= MAX_RATIO:
            raise ValueError(f"the row cost ratio must lie in [{MIN_RATIO}, {MAX_RATIO}], got {prior_ratio}")
        self.prior_ratio = prior_ratio
        self.fixed = fixed
        self.min_pairs = min_pairs
        self.min_gap = min_gap
        self.window = window
        self._steps: deque[tuple[int, float]] = deque(maxlen=window)
        self._slopes: deque[tuple[int, float]] = deque(maxlen=window)  # (step number, ms per row)
        self._count = 0

    def observe(self, rows: int, ms: float) -> None:
        """One step of `rows` rows (all with logits, no prefill) took `ms`."""
        if self.fixed or rows <= 0 or ms <= 0.0:
            return
        self._count += 1
        if self._steps:
            last_rows, last_ms = self._steps[-1]
            if abs(rows - last_rows) >= self.min_gap:
                self._slopes.append((self._count, (ms - last_ms) / (rows - last_rows)))
        self._steps.append((rows, ms))

    def ratio(self) -> float:
        """b / a: the cost of one more row as a fraction of the step's fixed cost."""
        slopes = [s for at, s in self._slopes if at > self._count - self.window]
        if self.fixed or len(slopes) < self.min_pairs:
            return self.prior_ratio
        b = median(slopes)
        a = median(ms - b * rows for rows, ms in self._steps)
        if b <= 0.0 or a <= 0.0:  # noise larger than the signal
            return self.prior_ratio
        return min(MAX_RATIO, max(MIN_RATIO, b / a))
