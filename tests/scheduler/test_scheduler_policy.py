"""The scheduling policy on a real (tiny) KVCacheManager, without a model: admission,
preemption order, requeue at the front, and failing a request that can never fit."""

import torch
from astrai.cache import KVCacheManager
from astrai.scheduler import SamplingParams
from astrai.scheduler.request import Request, RequestStatus
from astrai.scheduler.scheduler import Scheduler

PAGE = 4


def make(num_pages, **kw):
    kv = KVCacheManager(1, 1, 4, page_size=PAGE, num_pages=num_pages, dtype=torch.float32)
    opts = dict(max_num_seqs=8, max_num_batched_tokens=64, enable_prefix_cache=True) | kw
    return kv, Scheduler(kv, **opts)


def request(rid, prompt_len, arrival, priority=0, base=0):
    prompt = [base + arrival * 100 + i + 1 for i in range(prompt_len)]
    return Request(rid, prompt, SamplingParams(), max_tokens=8, eos_token_ids=[0], priority=priority, arrival_seq=arrival)


def run_step(sched, plan):
    """What the engine does after a forward: advance chunks, append a token where sampled."""
    for c in plan.chunks:
        c.request.num_computed = c.end
        if c.sample:
            c.request.output_token_ids.append(7)


def test_admits_while_pages_last_then_preempts_lowest_priority_newest():
    kv, sched = make(num_pages=6)
    reqs = [request("a", 8, 0), request("b", 8, 1, priority=1), request("c", 8, 2)]
    for r in reqs:
        sched.add(r)
    plan = sched.schedule()
    assert [c.request.request_id for c in plan.chunks] == ["a", "c", "b"]  # priority order
    assert kv.num_free_pages() == 0
    run_step(sched, plan)
    # every request now needs a third page; "b" has the lowest priority (largest number)
    plan = sched.schedule()
    assert [r.request_id for r in plan.preempted] == ["b"]
    assert [c.request.request_id for c in plan.chunks] == ["a", "c"]
    b = reqs[1]
    assert b.status is RequestStatus.WAITING and b.num_computed == 0 and b.output_token_ids == [7]
    assert sched.waiting.peek() is b and sched.num_preemptions == 1
    kv.check_invariants()


def test_preempted_request_goes_before_older_waiting_ones():
    kv, sched = make(num_pages=4, max_num_seqs=2)
    a, b, late = request("a", 8, 0), request("b", 4, 1), request("late", 4, 2)
    for r in (a, b, late):
        sched.add(r)
    plan = sched.schedule()  # a and b run (max_num_seqs=2), late waits
    run_step(sched, plan)
    for _ in range(4):  # b needs a second page, then a a third: pages run out, b (newest) goes
        plan = sched.schedule()
        run_step(sched, plan)
        if plan.preempted:
            break
    assert [r.request_id for r in plan.preempted] == ["b"]
    assert sched.waiting.peek() is b  # ahead of "late", although "late" waited longer in the queue
    kv.check_invariants()


def test_request_larger_than_the_pool_fails_instead_of_blocking():
    kv, sched = make(num_pages=2)
    big, small = request("big", 12, 0), request("small", 4, 1)
    sched.add(big)
    sched.add(small)
    plan = sched.schedule()
    assert [r.request_id for r, _ in plan.failed] == ["big"]
    assert "12 tokens" in plan.failed[0][1] and str(kv.capacity_tokens) in plan.failed[0][1]
    assert [c.request.request_id for c in plan.chunks] == ["small"]
    kv.check_invariants()


def test_static_mode_admits_a_new_batch_only_when_the_old_one_is_done():
    kv, sched = make(num_pages=64, static=True, max_num_seqs=2)
    reqs = [request(f"r{i}", 4, i) for i in range(3)]
    for r in reqs:
        sched.add(r)
    plan = sched.schedule()
    assert [r.request_id for r in plan.admitted] == ["r0", "r1"]
    run_step(sched, plan)
    sched.release(reqs[0])  # r0 finished early: r2 must still wait for r1
    plan = sched.schedule()
    assert not plan.admitted and [c.request.request_id for c in plan.chunks] == ["r1"]
    run_step(sched, plan)
    sched.release(reqs[1])
    plan = sched.schedule()
    assert [r.request_id for r in plan.admitted] == ["r2"]
    kv.check_invariants()


def test_chunked_prefill_respects_the_token_budget():
    kv, sched = make(num_pages=64, max_num_batched_tokens=10)
    long, other = request("long", 25, 0), request("other", 6, 1)
    sched.add(long)
    sched.add(other)
    sizes = []
    for _ in range(4):
        plan = sched.schedule()
        assert plan.num_tokens <= 10
        sizes.append([(c.request.request_id, c.start, c.end, c.sample) for c in plan.chunks])
        run_step(sched, plan)
    assert sizes[0] == [("long", 0, 10, False)]
    assert sizes[1] == [("long", 10, 20, False)]
    assert sizes[2] == [("long", 20, 25, True), ("other", 0, 5, False)]
    assert sizes[3] == [("long", 25, 26, True), ("other", 5, 6, True)]
    kv.check_invariants()


def test_a_request_waiting_20_steps_for_memory_touches_the_sketch_once():
    """Admission looks a waiting request up without side effects; only admitting it counts a use."""
    kv = KVCacheManager(1, 1, 4, page_size=PAGE, num_pages=16, dtype=torch.float32, eviction="tinylfu")
    sched = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, enable_prefix_cache=True)
    shared = list(range(1000, 1012))  # three pages, cached by a first request

    def make_request(rid, prompt, max_tokens, arrival):
        return Request(rid, prompt, SamplingParams(), max_tokens=max_tokens, eos_token_ids=[0], arrival_seq=arrival)

    def step():
        plan = sched.schedule()
        for c in plan.chunks:
            c.request.num_computed = c.end
            if c.sample:
                c.request.output_token_ids.append(7)
        return plan

    warm = make_request("warm", shared + [5], 1, 0)
    sched.add(warm)
    step()
    sched.release(warm)  # its three full pages go to the prefix cache
    (prefix,) = kv.radix.nodes()
    sketch = kv.radix.policy.sketch
    uses_before = sketch.estimate(prefix.freq_key)

    hog = make_request("hog", list(range(2000, 2010)), 30, 1)  # holds pages and grows a page every 4 steps
    waiter = make_request("waiter", shared + list(range(3000, 3044)), 4, 2)  # 14 pages: 11 beyond the cache
    sched.add(hog)
    sched.add(waiter)
    assert step().admitted == [hog]
    queried = kv.stats().tokens_queried
    for _ in range(20):
        plan = step()
        assert waiter not in plan.admitted and [c.request for c in plan.chunks] == [hog]
    assert sketch.estimate(prefix.freq_key) == uses_before  # looked up 20 times, counted never
    assert kv.stats().tokens_queried == queried and prefix.parent is not None  # still cached

    sched.release(hog)
    plan = step()
    assert plan.admitted == [waiter] and waiter.num_cached_tokens == len(shared)
    assert sketch.estimate(prefix.freq_key) == uses_before + 1  # admitted: one use
    assert kv.stats().tokens_queried == queried + len(waiter.prompt_token_ids)
    kv.check_invariants()
