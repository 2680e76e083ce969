"""Speculator: which decoding requests get drafts this step, and how long.

After the scheduler has planned a step, every request that only decodes (and has not opted
out) may ask its proposer for a draft. Each draft token has an estimate of being accepted,
the product of the per-token estimates up to it: the proposer's own (scaled by how estimates of
that size have fared for this request: observed / predicted acceptances) or, without one, the
request's observed per-token acceptance rate. Tokens join the step in order of that estimate while each one adds more
expected tokens than it costs, with the step's cost per row learnt by `StepCost`:

    take a token of estimate P  iff  P > rho * T / (1 + rho * R)

(T expected tokens and R rows in the step so far, rho = cost of a row / fixed cost of a step:
the step's tokens per unit of time go up). One user on a memory-bound step gets long drafts;
a step already full of rows (compute-bound) gets only near-certain tokens, then none; a
request whose drafts keep failing sees its estimates fall and stops drafting, and they drift
back slowly so it tries again later. A request whose draft did not pay is not asked again for a
few steps (1, 2, 4, then every 8 while it keeps not paying; reset once one is taken): in a step
full of rows the proposer's search would otherwise run for every request, every step, for
drafts that are then declined. Drafts only use free pages above the watermark: memory short
means shorter drafts, never an eviction or a preemption.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..request import Request
from ..scheduler import Scheduler, StepPlan
from .cost import StepCost
from .proposer import Draft, Proposer

PRIOR_RATE = 0.6  # per-token acceptance assumed before a request has any history
PRIOR_WEIGHT = 1.5  # ... worth this many verified tokens
DECAY = 0.85  # the record of earlier verifications, kept per new one
FADE = 0.97  # ... and per step without a draft
MAX_CALIBRATION = 4.0
MAX_TOKEN_ESTIMATE = 0.98  # no draft token is ever taken for certain: long paths always decay
BANDS = (0.6, 0.85, 1.0)  # upper bounds of the bands a proposer's estimates are calibrated in
MAX_QUIET_STEPS = 8  # the longest pause in asking for a request whose drafts do not pay


@dataclass
class SpeculationCounters:
    """Totals since start (read by `engine.stats()`): vLLM's spec_decode_* counters."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: dict[int, int] = field(default_factory=dict)


class _Estimates:
    """One request's record of its verified draft tokens (each up to and including the first
    rejection), decayed per verification: how many were accepted and tried, and, per band of
    the proposer's own estimate, how many were accepted against how many it predicted. A few
    tokens' worth of prior keeps the first verifications from swinging the estimates.

    The bands matter because a proposer's estimate mostly says how long its match was: for a
    request copying its prompt even short matches are right, in open chat they are not, and one
    factor for all tokens would get one of the two wrong."""

    __slots__ = ("accepted", "trials", "band_accepted", "band_predicted")

    def __init__(self) -> None:
        self.accepted = self.trials = 0.0
        self.band_accepted = [0.0] * len(BANDS)
        self.band_predicted = [0.0] * len(BANDS)

    @property
    def rate(self) -> float:
        """Observed per-token acceptance: the estimate for drafts that bring none."""
        return (self.accepted + PRIOR_WEIGHT * PRIOR_RATE) / (self.trials + PRIOR_WEIGHT)

    def calibration(self, band: int) -> float:
        """Observed / predicted acceptances in a band: the factor on the proposer's estimates there."""
        return min(MAX_CALIBRATION, (self.band_accepted[band] + PRIOR_WEIGHT)
                   / (self.band_predicted[band] + PRIOR_WEIGHT))

    def scaled(self, prob: float) -> float:
        return min(MAX_TOKEN_ESTIMATE, self.calibration(_band(prob)) * prob)

    @property
    def best(self) -> float:
        """The most any first draft token could be estimated at."""
        return min(MAX_TOKEN_ESTIMATE, max(self.rate, *(self.calibration(b) * BANDS[b] for b in range(len(BANDS)))))

    def update(self, matched: int, proposed: int, probs: list[float] | None) -> None:
        trials = matched + (1 if matched < proposed else 0)  # tokens verified one after another
        self.accepted = DECAY * self.accepted + matched
        self.trials = DECAY * self.trials + trials
        if probs is None:
            return
        for b in range(len(BANDS)):
            self.band_accepted[b] *= DECAY
            self.band_predicted[b] *= DECAY
        for i, prob in enumerate(probs[:trials]):
            band = _band(prob)
            self.band_predicted[band] += prob
            self.band_accepted[band] += 1.0 if i < matched else 0.0

    def recover(self) -> None:
        """A step without a draft: the record fades, so a request that failed tries again later."""
        self.accepted *= FADE
        self.trials *= FADE
        for b in range(len(BANDS)):
            self.band_accepted[b] *= FADE
            self.band_predicted[b] *= FADE


def _band(prob: float) -> int:
    """Which band of BANDS (upper bounds) a proposer's estimate falls in."""
    for b, upper in enumerate(BANDS):
        if prob <= upper:
            return b
    return len(BANDS) - 1


class Speculator:
    def __init__(self, proposer: Proposer, *, max_tokens: int, cost: StepCost | None = None) -> None:
        if max_tokens < 1:
            raise ValueError(f"speculation max_tokens must be >= 1, got {max_tokens}")
        self.proposer = proposer
        self.max_tokens = max_tokens
        self.cost = cost if cost is not None else StepCost()
        self.counters = SpeculationCounters()
        self._estimates: dict[str, _Estimates] = {}
        self._drafted: dict[str, list[float] | None] = {}  # this step's drafts' own per-token estimates
        self._step = 0
        self._quiet: dict[str, tuple[int, int]] = {}  # request -> (not asked before this step, pause)

    # --- planning ----------------------------------------------------------------------

    @staticmethod
    def eligible(req: Request, start: int, end: int) -> bool:
        """A request decoding one token whose output may still grow by two or more."""
        return (end - start == 1 and start >= len(req.prompt_token_ids) and req.params.speculation
                and req.tokens_left > 1)

    def extend(self, plan: StepPlan, scheduler: Scheduler) -> None:
        """Give this step's decoding chunks the drafts that pay, reserving their pages."""
        if plan.preempted:  # pages are tight: no optional work this step
            return
        self._step += 1
        chunks = [c for c in plan.chunks if c.sample and self.eligible(c.request, c.start, c.end)]
        if not chunks:
            return
        rows = plan.num_tokens
        tokens = float(sum(1 for c in plan.chunks if c.sample))
        room = scheduler.max_num_batched_tokens - rows
        rho = self.cost.ratio()
        asked, limits = [], []
        for c in chunks:
            est = self._estimate(c.request)
            limit = min(self.max_tokens, c.request.tokens_left - 1, room)
            quiet = self._step < self._quiet.get(c.request.request_id, (0, 0))[0]
            if quiet or limit <= 0 or est.best <= rho * tokens / (1.0 + rho * rows):
                est.recover()
                continue
            asked.append(c)
            limits.append(limit)
        if not asked:
            return
        drafts = self.proposer.propose([c.request for c in asked], limits)
        paths = [self._paths(c.request, d) for c, d in zip(asked, drafts, strict=True)]
        taken = [0] * len(asked)
        heap = [(-p[0], i) for i, p in enumerate(paths) if p]
        heapq.heapify(heap)
        while heap and room > 0:
            neg, i = heapq.heappop(heap)
            if -neg <= rho * tokens / (1.0 + rho * rows):
                break  # the best token left does not pay; no later one would
            tokens -= neg
            rows += 1
            room -= 1
            taken[i] += 1
            if taken[i] < len(paths[i]):
                heapq.heappush(heap, (-paths[i][taken[i]], i))
        for c, d, k in zip(asked, drafts, taken, strict=True):
            self._note_payoff(c.request.request_id, declined=bool(d.tokens) and not k)
            if k:
                end = scheduler.reserve_ahead(c.request, c.end, c.end + k)
                k = end - c.end
            if not k:
                self._estimate(c.request).recover()
                continue
            c.draft = d.tokens[:k]
            c.end += k
            self._drafted[c.request.request_id] = d.probs[:k] if d.probs is not None else None

    def _note_payoff(self, request_id: str, *, declined: bool) -> None:
        """After asking: a declined draft doubles the request's pause in asking; anything else ends it."""
        if not declined:
            self._quiet.pop(request_id, None)
            return
        pause = min(MAX_QUIET_STEPS, 2 * self._quiet.get(request_id, (0, 0))[1] or 1)
        self._quiet[request_id] = (self._step + 1 + pause, pause)

    def _estimate(self, req: Request) -> _Estimates:
        est = self._estimates.get(req.request_id)
        if est is None:
            est = self._estimates[req.request_id] = _Estimates()
        return est

    def _paths(self, req: Request, draft: Draft) -> list[float]:
        """The estimate that each draft token is accepted (all before it too), non-increasing:
        products of per-token estimates, the proposer's scaled by the request's calibration."""
        est = self._estimate(req)
        if draft.probs is None:
            per_token = [min(MAX_TOKEN_ESTIMATE, est.rate)] * len(draft.tokens)
        else:
            per_token = [est.scaled(q) for q in draft.probs]
        out, p = [], 1.0
        for q in per_token:
            p *= q
            out.append(p)
        return out

    # --- after the step ----------------------------------------------------------------

    def settle(self, req: Request, proposed: int, matched: int) -> None:
        """A draft of `proposed` tokens was verified; the first `matched` equalled the target's."""
        c = self.counters
        c.num_drafts += 1
        c.num_draft_tokens += proposed
        c.num_accepted_tokens += matched
        for pos in range(matched):
            c.accepted_per_position[pos] = c.accepted_per_position.get(pos, 0) + 1
        self._estimate(req).update(matched, proposed, self._drafted.pop(req.request_id, None))

    def observe_step(self, rows: int, ms: float) -> None:
        """A step of `rows` decode/verification rows (no prefill) took `ms` in all."""
        self.cost.observe(rows, ms)

    def finish(self, req: Request) -> None:
        self._estimates.pop(req.request_id, None)
        self._drafted.pop(req.request_id, None)
        self._quiet.pop(req.request_id, None)
        self.proposer.finish(req)
