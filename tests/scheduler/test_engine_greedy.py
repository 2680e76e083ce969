"""Greedy token ids do not depend on what else the engine is doing, on each of the three paths.

Paths: "torch" (float32 weights, the Python layers), "native" (the same weights, one native call
per step) and "low-bit" (the default: packed Q4_1/Q8_0 weights, float16 KV).
"""

import pytest
from astrai.scheduler import SamplingParams

from .conftest import TEXT, mixed_prompts, settle

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
PATHS = {"torch": "torch_engine", "native": "engine", "low-bit": "low_bit_engine"}


@pytest.fixture(scope="module", params=list(PATHS))
def engine(request):
    """This module's `engine` is each path's in turn (the session fixtures are shared)."""
    return request.getfixturevalue(PATHS[request.param])


@pytest.fixture(scope="module")
def prompts(engine):
    return mixed_prompts(engine.tokenizer)


@pytest.fixture(scope="module")
def greedy_alone(engine, prompts):
    """Reference: each prompt generated greedily on its own on this path."""
    refs = [engine.generate([p], GREEDY)[0].token_ids for p in prompts]
    settle(engine)
    return refs


@pytest.fixture
def make_engine(engine):
    made = []

    def make(**settings):
        made.append(engine.with_settings(**settings))
        return made[-1]

    yield make
    for eng in made:
        settle(eng)
        eng.shutdown()


def test_sixteen_concurrent_mixed_lengths_match_alone(engine, prompts, greedy_alone):
    assert len({len(p) for p in prompts}) >= 8
    outs = engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == greedy_alone
    assert all(o.finish_reason == "length" and len(o.token_ids) == 8 for o in outs)
    settle(engine)


def test_small_token_budget_chunks_prefill_identically(make_engine, prompts, greedy_alone):
    eng = make_engine(num_pages=512, max_num_batched_tokens=24, max_num_seqs=8)
    outs = eng.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == greedy_alone
    settle(eng)


def test_preemption_under_a_tiny_pool_keeps_outputs(make_engine, prompts, greedy_alone):
    # the 8 longest prompts; a pool where about two of them fit at once
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[:8]
    longest = len(prompts[order[0]]) + 8
    eng = make_engine(num_pages=2 * -(-longest // 16) + 1, max_num_seqs=8)
    outs = eng.generate([prompts[i] for i in order], GREEDY)
    assert eng.stats()["num_preemptions_total"] > 0
    assert [o.token_ids for o in outs] == [greedy_alone[i] for i in order]
    settle(eng)


def shared_prefix_prompts(tokenizer):
    system = tokenizer.encode(TEXT)[:70]
    tails = ["Summarise it.", "Who was Gutenberg?", "What came next?", "Name one effect."]
    return [system + tokenizer.encode(" " + t) for t in tails]


def test_prefix_cache_on_off_and_warm_agree(engine, make_engine):
    prompts = shared_prefix_prompts(engine.tokenizer)
    off = make_engine(num_pages=256, enable_prefix_cache=False)
    cold = make_engine(num_pages=256)
    ref = [o.token_ids for o in off.generate(prompts, GREEDY)]
    first = cold.generate(prompts, GREEDY)
    hits_before = cold.stats()["prefix_cache_hits"]
    warm = cold.generate(prompts, GREEDY)
    assert [o.token_ids for o in first] == ref
    assert [o.token_ids for o in warm] == ref
    assert all(o.num_cached_tokens >= 64 for o in warm)
    assert cold.stats()["prefix_cache_hits"] - hits_before >= 64 * len(prompts)
    assert off.stats()["prefix_cache_hits"] == 0
    # A 100% hit (a prompt of exactly 5 full pages, seen before) still computes the last
    # token's logits: 79 of 80 tokens come from the cache and the output is unchanged.
    exact = (prompts[0] * 2)[:80]
    first_exact = cold.generate([exact], GREEDY)[0]
    again = cold.generate([exact], GREEDY)[0]
    assert again.num_cached_tokens == 79
    assert again.token_ids == first_exact.token_ids == off.generate([exact], GREEDY)[0].token_ids
    settle(off)
    settle(cold)


def test_static_batching_gives_the_same_tokens(make_engine, prompts, greedy_alone):
    eng = make_engine(num_pages=512, scheduling="static", max_num_seqs=8)
    events = []
    eng.subscribe(events.append)
    outs = eng.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == greedy_alone
    settle(eng)
    # Static: a new batch is only admitted once every member of the previous one finished.
    running = set()
    for ev in events:
        new = [p["request_id"] for p in ev.prefill if p["request_id"] not in running]
        if new:
            assert not running, f"step {ev.step} admitted {new} while {running} were running"
        running |= set(new)
        running -= {f["request_id"] for f in ev.finished}
