"""StepCost: what one more row costs in a step, relative to the step itself, learnt online.

A decode step's time is close to `a + b * rows`: `a` reads the weights once (and pays the
step's fixed overhead), `b` is each row's own compute. Speculation pays where `b` is small
next to `a` (one user, memory-bound) and stops paying as rows grow (compute-bound). The fit is
exponentially weighted least squares over recent steps without prefill, anchored by a weak
prior (`prior_ratio` = b / a, scaled by the first step seen) so a stream of one-row steps,
which says nothing about `b`, still gives an answer.
"""

from __future__ import annotations

MIN_RATIO, MAX_RATIO = 0.01, 4.0


class StepCost:
    def __init__(self, prior_ratio: float = 0.3, *, fixed: bool = False, decay: float = 0.98,
                 prior_weight: float = 1.0) -> None:
        """`fixed`: always answer `prior_ratio` (a ratio the operator measured), learn nothing."""
        if not MIN_RATIO <= prior_ratio <= MAX_RATIO:
            raise ValueError(f"the row cost ratio must lie in [{MIN_RATIO}, {MAX_RATIO}], got {prior_ratio}")
        self.prior_ratio = prior_ratio
        self.fixed = fixed
        self.decay = decay
        self.prior_weight = prior_weight
        self._data = [0.0] * 5  # weighted sums: w, x, y, xx, xy
        self._prior: list[float] | None = None

    def observe(self, rows: int, ms: float) -> None:
        """One step of `rows` rows (all with logits, no prefill) took `ms`."""
        if self.fixed or rows <= 0 or ms <= 0.0:
            return
        if self._prior is None:  # anchor the prior at this step's scale: two points on a + b * x
            a = ms / (1.0 + self.prior_ratio * rows)
            b = self.prior_ratio * a
            self._prior = [0.0] * 5
            for x in (1.0, 17.0):
                _add(self._prior, x, a + b * x, self.prior_weight / 2)
        d = self._data
        for i in range(5):
            d[i] *= self.decay
        _add(d, float(rows), ms, 1.0)

    def ratio(self) -> float:
        """b / a: the cost of one more row as a fraction of the step's fixed cost."""
        if self._prior is None:
            return self.prior_ratio
        w, x, y, xx, xy = (p + q for p, q in zip(self._prior, self._data, strict=True))
        det = w * xx - x * x
        if det <= 1e-12:
            return self.prior_ratio
        b = (w * xy - x * y) / det
        a = (y - b * x) / w
        if a <= 0.0:
            return MAX_RATIO
        return min(MAX_RATIO, max(MIN_RATIO, b / a))


def _add(sums: list[float], x: float, y: float, w: float) -> None:
    sums[0] += w
    sums[1] += w * x
    sums[2] += w * y
    sums[3] += w * x * x
    sums[4] += w * x * y
