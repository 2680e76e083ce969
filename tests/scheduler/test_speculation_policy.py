"""The speculation policy over a real scheduler and KV cache (no model): who gets drafts, how long,
and what memory they may use."""

from __future__ import annotations

import time

import torch
from astrai.cache import KVCacheManager
from astrai.scheduler import SamplingParams
from astrai.scheduler.request import Request
from astrai.scheduler.scheduler import Scheduler
from astrai.scheduler.speculation import PromptLookupProposer, Speculator, SuffixProposer
from astrai.scheduler.speculation.cost import StepCost

PS = 4
REPEAT = [5, 6, 7, 8, 9, 10, 11, 12]  # a prompt that repeats itself: prompt lookup always has a guess


def setup(num_pages=256, budget=512, ratio=0.1, max_tokens=8, proposer=None):
    kv = KVCacheManager(2, 1, 4, page_size=PS, num_pages=num_pages, dtype=torch.float32)
    sched = Scheduler(kv, max_num_seqs=32, max_num_batched_tokens=budget, enable_prefix_cache=True)
    spec = Speculator(proposer or PromptLookupProposer(), max_tokens=max_tokens,
                      cost=StepCost(prior_ratio=ratio, fixed=True))
    return kv, sched, spec


def decoding(sched, n=1, *, max_tokens=64, prompt=None, **params):
    """Requests admitted, prefilled and holding one sampled token: ready to decode."""
    reqs = []
    for i in range(n):
        req = Request(f"r{i}", list(prompt or REPEAT * 3), SamplingParams(max_tokens=max_tokens, **params),
                      max_tokens=max_tokens, eos_token_ids=[0])
        req.arrival_seq = i
        sched.add(req)
        reqs.append(req)
    plan = sched.schedule()
    assert len(plan.chunks) == n and not plan.preempted
    for c in plan.chunks:
        c.request.num_computed = c.end
        c.request.append_token(REPEAT[0], None, time.monotonic())
    return reqs


def test_one_memory_bound_request_gets_a_draft_with_its_pages_reserved():
    kv, sched, spec = setup()
    (req,) = decoding(sched)
    plan = sched.schedule()
    spec.extend(plan, sched)
    (c,) = plan.chunks
    assert c.draft == REPEAT[1:][: len(c.draft)] and 1 <= len(c.draft) <= 8
    assert c.end == c.start + 1 + len(c.draft) == plan.num_tokens + c.start
    assert len(kv.block_table(req.request_id)) * PS >= c.end  # the draft's positions are reserved
    kv.truncate(req.request_id, c.start + 1)  # everything rejected: pages back
    kv.check_invariants()


def test_a_compute_bound_step_gets_no_drafts():
    kv, sched, spec = setup(ratio=2.0)  # one more row costs twice the step's fixed cost
    decoding(sched, 8)
    plan = sched.schedule()
    spec.extend(plan, sched)
    assert [c.draft for c in plan.chunks] == [[]] * 8 and plan.num_tokens == 8
    _, sched1, spec1 = setup(ratio=2.0)  # alone, the same request still does not pay for a guess
    decoding(sched1, 1)
    alone = sched1.schedule()
    spec1.extend(alone, sched1)
    assert alone.chunks[0].draft == []
    _, sched2, spec2 = setup(ratio=0.1)  # cheap rows: the same batch speculates
    decoding(sched2, 8)
    cheap = sched2.schedule()
    spec2.extend(cheap, sched2)
    assert all(c.draft for c in cheap.chunks)


class CountingProposer(PromptLookupProposer):
    """Prompt lookup that records which requests it was asked for, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def propose(self, requests, limits):
        self.asked.append([r.request_id for r in requests])
        return super().propose(requests, limits)


def advance(sched, plan) -> None:
    """Every chunk of the plan computed (drafts rejected) and one token sampled: the next step decodes."""
    for c in plan.chunks:
        sched.kv.truncate(c.request.request_id, c.start + 1)
        c.request.num_computed = c.start + 1
        c.request.append_token(REPEAT[len(c.request.output_token_ids) % len(REPEAT)], None, time.monotonic())


def test_requests_whose_drafts_do_not_pay_are_asked_less_often():
    proposer = CountingProposer()
    kv, sched, spec = setup(ratio=2.0, proposer=proposer)  # compute-bound: drafts are declined
    decoding(sched, 8)
    asked_at = []
    for step in range(16):
        plan = sched.schedule()
        spec.extend(plan, sched)
        assert all(c.draft == [] for c in plan.chunks)
        if proposer.asked and len(proposer.asked) > len(asked_at):
            asked_at.append(step)
            assert len(proposer.asked[-1]) == 8
        advance(sched, plan)
    assert asked_at == [0, 2, 5, 10], asked_at  # pauses of 1, 2, 4, then 8 steps
    # the same requests on cheap rows: the draft pays, so the request is asked every step
    proposer = CountingProposer()
    _, sched, spec = setup(ratio=0.1, proposer=proposer)
    decoding(sched, 8)
    for _ in range(3):
        plan = sched.schedule()
        spec.extend(plan, sched)
        assert all(c.draft for c in plan.chunks)
        advance(sched, plan)
    assert [len(a) for a in proposer.asked] == [8, 8, 8]


def test_drafts_respect_max_tokens_the_step_budget_and_the_opt_out():
    _, sched, spec = setup(max_tokens=16)
    (req,) = decoding(sched, max_tokens=4)  # 1 generated, 3 left: at most 2 draft tokens + the target's own
    plan = sched.schedule()
    spec.extend(plan, sched)
    assert len(plan.chunks[0].draft) == 2
    _, sched, spec = setup(budget=5, max_tokens=16)  # the step holds at most 5 tokens
    decoding(sched, 1)
    plan = sched.schedule()
    spec.extend(plan, sched)
    assert plan.num_tokens <= 5
    _, sched, spec = setup()
    decoding(sched, 1, speculation=False)
    plan = sched.schedule()
    spec.extend(plan, sched)
    assert plan.chunks[0].draft == []


def test_drafts_stop_when_they_keep_failing_and_come_back_later():
    kv, sched, spec = setup(ratio=0.3)
    (req,) = decoding(sched)
    lengths = []
    for _ in range(8):
        plan = sched.schedule()
        spec.extend(plan, sched)
        c = plan.chunks[0]
        lengths.append(len(c.draft))
        if c.draft:
            spec.settle(req, len(c.draft), 0)  # the target disagreed with every first token
        kv.truncate(req.request_id, c.start + 1)
        req.num_computed = c.start + 1
        req.append_token(REPEAT[len(req.output_token_ids) % len(REPEAT)], None, time.monotonic())
    assert lengths[0] > 0 and lengths[-1] == 0, lengths
    for _ in range(60):  # steps without a draft: the record fades and the request tries again
        plan = sched.schedule()
        spec.extend(plan, sched)
        if plan.chunks[0].draft:
            break
        req.num_computed = plan.chunks[0].end
        req.append_token(REPEAT[len(req.output_token_ids) % len(REPEAT)], None, time.monotonic())
    assert plan.chunks[0].draft, "a request that stopped drafting must try again later"


def test_short_memory_shortens_drafts_without_evicting_or_preempting():
    # rows nearly free and confident drafts (the prompt repeats itself): only memory limits them
    kv, sched, spec = setup(num_pages=220, ratio=0.05, max_tokens=16, proposer=SuffixProposer(0))
    reqs = decoding(sched, 2, prompt=REPEAT * 2)  # 16-token prompts: 4 pages each, a 5th to decode into
    filler = list(range(100, 100 + PS * 200))  # a cached prefix nobody uses: 200 evictable pages
    kv.open("filler", filler)
    assert kv.reserve("filler", len(filler))
    kv.close("filler", filler)
    watermark = sched._watermark
    # leave the two decodes their new pages, the watermark, and one spare page
    kv.open("hog", [1])
    assert kv.reserve("hog", (kv.num_free_pages() - 2 - watermark - 1) * PS)
    cached = kv.num_cached_pages()
    plan = sched.schedule()
    assert not plan.preempted and kv.num_free_pages() == watermark + 1
    spec.extend(plan, sched)
    first, second = (len(c.draft) for c in plan.chunks)
    # positions 17-19 of each one's last page, and the spare page's 4 for the first one
    assert first == 3 + PS and second == 3
    for c in plan.chunks:
        assert len(kv.block_table(c.request.request_id)) * PS >= c.end
    assert kv.num_cached_pages() == cached and not plan.preempted  # nothing evicted, nobody preempted
    assert kv.num_free_pages() == watermark and all(r in sched.running for r in reqs)
    kv.check_invariants()


def test_the_step_cost_is_learnt_from_step_times_or_pinned():
    cost = StepCost(prior_ratio=0.3)
    assert cost.ratio() == 0.3  # nothing seen yet: the prior
    for i in range(40):  # a step reads the weights (8 ms) and each row adds 2 ms
        rows = (1, 9, 5)[i % 3]
        cost.observe(rows, 8.0 + 2.0 * rows)
    assert cost.ratio() == 0.25
    noisy = StepCost(prior_ratio=0.3)
    for i in range(60):  # the machine's load doubles every step time for a while, now and then
        rows = (1, 9)[i % 2]
        load = 2.0 if (i // 10) % 2 else 1.0
        noisy.observe(rows, load * (8.0 + 2.0 * rows) + (5.0 if i % 7 == 0 else 0.0))
    assert 0.15 < noisy.ratio() < 0.35  # medians of consecutive pairs: the load cancels, spikes are outvoted
    alone = StepCost(prior_ratio=0.3)
    for _ in range(50):
        alone.observe(1, 10.0)  # one-row steps say nothing about a row's cost: the prior holds
    assert alone.ratio() == 0.3
    for _ in range(cost.window):  # ... and old pairs age out: no estimate stops speculation for good
        cost.observe(1, 10.0)
    assert cost.ratio() == 0.3
    pinned = StepCost(prior_ratio=0.5, fixed=True)
    for rows in (1, 9) * 10:
        pinned.observe(rows, 1000.0 * rows)
    assert pinned.ratio() == 0.5


def test_engine_settings_for_speculation_are_checked(engine):
    import pytest

    for bad, message in ((dict(speculation="eagle"), "speculation must be one of off, ngram, suffix"),
                         (dict(speculation_max_tokens=0), "speculation_max_tokens must be a positive integer"),
                         (dict(speculation_suffix_tokens=-1), "speculation_suffix_tokens must be a non-negative"),
                         (dict(speculation_shared_suffix="yes"), "speculation_shared_suffix must be a bool"),
                         (dict(speculation_row_cost=9.0), r"speculation_row_cost must be a number in \[0.05, 4\]")):
        with pytest.raises(ValueError, match=message):
            engine.with_settings(**bad)
    with pytest.raises(ValueError, match="speculation must be a bool"):
        SamplingParams(speculation="no")
    with pytest.raises(ValueError, match="tenant must be a string"):
        SamplingParams(tenant=3)
