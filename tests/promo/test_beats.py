"""trace -> beats is a pure function: on the handcrafted trace every beat is known in advance."""

from __future__ import annotations

import copy

import pytest
from astrai.promo import Trace, architecture_beats, batching_beats, paged_cache_beats
from astrai.promo.beats import (
    BatchStepBeat,
    Cell,
    HighlightBeat,
    Lane,
    LayerBeat,
    LoopBeat,
    PoolIntroBeat,
    PoolStepBeat,
    PoolSummaryBeat,
    TableRow,
    ThroughputBeat,
    TitleBeat,
)
from astrai.promo.sampling import evenly, plan_timing, sample_indices
from astrai.scheduler import PHASES


@pytest.fixture
def trace(trace_dict) -> Trace:
    return Trace.from_dict(trace_dict)


def test_architecture_beats(trace):
    beats = architecture_beats(trace)
    assert beats[0] == TitleBeat(
        "AstrAI — how a request flows", "a live run of smollm2-135m-instruct · recorded by astrai-promo 0.1.0", 3.0
    )
    layers = [b.layer for b in beats[1:6]]
    assert all(isinstance(b, LayerBeat) for b in beats[1:6])
    assert [(layer.key, layer.title, layer.origin, layer.highlight) for layer in layers] == [
        ("server", "HTTP server", "astrai-server 0.1.0 · astrai.server", False),
        ("engine", "Engine", "astrai-scheduler 0.1.0 · astrai.scheduler.engine", False),
        ("scheduler", "Scheduler (background loop)", "astrai-scheduler 0.1.0 · astrai.scheduler.scheduler", True),
        ("cache", "Prefix cache + paged KV", "astrai-cache 0.1.0 · astrai.cache.manager", True),
        ("model", "Transformer", "astrai-model 0.1.0 · astrai.model.transformer", False),
    ]
    assert layers[1].facts == ("3 requests in this run · at most 4 running at once · streams RequestOutput deltas",)
    assert layers[2].facts == (
        "Schedule → Build batch → Forward → Sample · 7 steps · up to 2 sequences per forward · 0 preemptions",
    )
    assert layers[3].facts == (
        "page size 4 tokens · pool 12 pages (48 tokens) · prefix pages shared: 1 · evicted: 1",
    )
    assert layers[4].facts == (
        "smollm2-135m-instruct · 30 layers · hidden 576 · vocab 49,152",
        "9 query / 3 KV heads (GQA 3:1) · 134.5M parameters · float32",  # a trace that names no weight format
    )
    assert isinstance(beats[6], HighlightBeat)
    assert [key for key, _ in beats[6].notes] == ["scheduler", "cache"]
    assert len(beats) == 7 and sum(b.seconds for b in beats) == pytest.approx(26.0)


def test_architecture_names_the_weight_format_and_kernel_variant(trace):
    trace.engine.update(weights="Q4_1+Q8_0 (packed), float32", forward="native", kernels="avx512")
    model = [b.layer for b in architecture_beats(trace)[1:6]][4]
    assert model.facts[1] == ("9 query / 3 KV heads (GQA 3:1) · 134.5M parameters · Q4_1+Q8_0 (packed), float32 · "
                              "native avx512 kernels")


def test_batching_beats(trace):
    beats = batching_beats(trace)
    assert isinstance(beats[0], LoopBeat)
    assert [p.name for p in beats[0].phases] == ["Schedule", "Build batch", "Forward", "Sample"]
    assert [p.key for p in beats[0].phases] == list(PHASES)
    assert beats[0].phases[1].mean_ms == pytest.approx(9.0 / 7)  # batches with prefills took 3 ms, 3 of 7 steps
    assert beats[0].phases[2].mean_ms == pytest.approx(4.0)
    assert beats[0].forward_ms == pytest.approx(4.0)
    steps = [b for b in beats if isinstance(b, BatchStepBeat)]
    assert [b.step for b in steps] == list(range(7))  # short trace: every step is shown
    mask = ["".join("1" if f else "0" for f in b.free_mask) for b in steps]
    assert mask == ["001111111111", "001111111111", "000111111111", "010111111111",
                    "001011111111", "101011111111", "111111111111"]
    assert [b.num_free_pages for b in steps] == [10, 10, 9, 10, 9, 10, 12]
    forward = ("build_batch", "forward", "sample")
    assert [b.active_phases for b in steps] == [  # the scheduler changed something in every step but 1
        ("schedule", *forward), forward, ("schedule", *forward), ("schedule", *forward),
        ("schedule", *forward), ("schedule", *forward), ("schedule", *forward),
    ]
    assert steps[2].lanes == (
        Lane("r1", "decode", 3, 4, "decoding · 3/4 tokens"),
        Lane("r2", "prefill", 1, 3, "prefill 1 token, 4 cached"),
        Lane("r3", "pending", 0, 3, "not arrived yet"),
    )
    assert steps[4].lanes == (
        Lane("r1", "gone", 4, 4, "left the batch"),
        Lane("r2", "finished", 3, 3, "finished (length) · 3 tokens"),
        Lane("r3", "prefill", 1, 3, "prefill 5 tokens"),
    )
    assert steps[2].caption == "step 2: one forward · 1 decode token + 1 prefill token"
    assert steps[4].events == "r3 arrives · r2 leaves (length)"
    assert [b.key for b in steps] == [False, False, True, False, False, False, False]  # r2 joins while r1 decodes
    assert beats[-1] == ThroughputBeat(
        100.0, 342.0, "static\n100 tok/s", "continuous\n342 tok/s",
        "continuous batching: 3.42× the throughput of static batching",
        "measured in this run on the same workload: 10 tokens in 0.10 s (static) vs 10 tokens in 0.03 s",
        6.0,
    )


def test_paged_cache_beats(trace):
    beats = paged_cache_beats(trace)
    assert beats[0] == PoolIntroBeat(12, 4, 12, "the KV page pool: all 12 pages, 4 tokens each", 4.0)
    steps = [b for b in beats if isinstance(b, PoolStepBeat)]
    assert [b.step for b in steps] == [0, 2, 3, 4, 5, 6]  # step 1 touched no page
    assert [b.skipped for b in steps] == [0, 1, 0, 0, 0, 0]

    def touched(beat):
        return [(c.page, c.state, c.refcount, c.flash) for c in beat.cells if c.state != "free" or c.flash]

    assert touched(steps[1]) == [(0, "used", 2, "shared"), (1, "used", 1, ""), (2, "used", 1, "allocated")]
    assert steps[1].tables == (TableRow("r1", (0, 1), (True, False)), TableRow("r2", (0, 2), (True, False)))
    assert touched(steps[3]) == [(0, "cached", 0, ""), (1, "used", 1, "reused"), (2, "free", 0, "freed"),
                                 (3, "used", 1, "allocated")]
    assert steps[3].events == "allocated 3 · reused 1 · freed 2"
    assert steps[3].caption == "step 4: 2 in use · 1 cached · 9 free"
    assert touched(steps[4]) == [(0, "free", 0, "evicted"), (1, "used", 1, ""), (3, "used", 1, "")]
    assert steps[5].cells[1] == Cell(1, "free", 0, "freed") and steps[5].tables == ()
    assert [b.key for b in steps] == [False, True, False, False, False, False]  # most sharing
    assert beats[-1] == PoolSummaryBeat(
        ("pages allocated on demand: 5, reused after a free: 1",
         "shared prefix pages: 1 (up to 2 requests on one page)",
         "pages freed: 4 · evicted from the prefix cache: 1",
         "peak use: 3 of 12 pages of 4 tokens"),
        6.0,
    )


def test_beats_follow_the_trace_numbers(trace_dict):
    """Change a number in the trace and the beats change with it."""
    trace_dict["throughput"]["ratio"] = 1.87
    trace_dict["model"]["num_kv_heads"] = 9
    trace_dict["engine"]["page_size"] = 16
    trace = Trace.from_dict(trace_dict)
    assert "1.87×" in batching_beats(trace)[-1].ratio_text
    layers = {b.layer.key: b.layer for b in architecture_beats(trace) if isinstance(b, LayerBeat)}
    assert "9 query / 9 KV heads (GQA 1:1)" in layers["model"].facts[1]
    assert layers["cache"].facts[0].startswith("page size 16 tokens · pool 12 pages (192 tokens)")


def _long_trace(trace_dict, repeats: int) -> Trace:
    """The handcrafted run repeated `repeats` times back to back (renamed requests, renumbered steps)."""
    base_steps, base_requests = trace_dict["steps"], trace_dict["requests"]
    steps, requests = [], []
    for k in range(repeats):
        rename = {r["request_id"]: f"{r['request_id']}-{k}" for r in base_requests}
        requests += [{**r, "request_id": rename[r["request_id"]]} for r in base_requests]
        for s in base_steps:
            s = copy.deepcopy(s)
            s["step"] += k * len(base_steps)
            s["arrived"] = [rename[r] for r in s["arrived"]]
            s["decode"] = [rename[r] for r in s["decode"]]
            for e in s["prefill"] + s["finished"]:
                e["request_id"] = rename[e["request_id"]]
            s["page_tables"] = {rename[r]: t for r, t in s["page_tables"].items()}
            steps.append(s)
    return Trace.from_dict({**trace_dict, "steps": steps, "requests": requests})


def test_long_traces_are_sampled_to_a_watchable_length(trace_dict):
    trace = _long_trace(trace_dict, 200)  # 1400 steps
    real = {s["step"] for s in trace.steps}
    for make, shown_type in ((batching_beats, BatchStepBeat), (paged_cache_beats, PoolStepBeat)):
        beats = make(trace)
        assert 20 <= sum(b.seconds for b in beats) <= 60
        shown = [b.step for b in beats if isinstance(b, shown_type)]
        assert shown == sorted(set(shown)) and set(shown) <= real  # real steps, in order, none invented
        assert 10 <= len(shown) < 100
    assert 20 <= sum(b.seconds for b in architecture_beats(trace)) <= 60


def test_max_seconds_caps_every_scene(trace_dict):
    trace = _long_trace(trace_dict, 20)
    for make in (architecture_beats, batching_beats, paged_cache_beats):
        total = sum(b.seconds for b in make(trace, 8.0))
        assert 5.0 <= total <= 8.0 + 1e-6


def test_sampling_helpers():
    assert evenly([1, 2, 3, 4, 5, 6, 7, 8, 9], 3) == [1, 5, 9]
    assert evenly([4, 5], 5) == [4, 5]
    # the best class first, the next class fills the remaining room evenly, zeros never
    assert sample_indices([1, 3, 0, 1, 1, 3, 1, 0, 1], 4) == [0, 1, 5, 8]  # class 3: 1, 5; class 1 ends: 0, 8
    assert sample_indices([0, 0, 0], 5) == []
    timing = plan_timing((4.0, 6.0), 1.0, 45.0)
    assert timing.max_steps == 35 and timing.fixed == (4.0, 6.0)
    short = plan_timing((4.0, 6.0), 1.0, 8.0)
    assert short.max_steps == 3 and sum(short.fixed) + 3 * short.per_step == pytest.approx(8.0, abs=0.01)


def test_batching_beats_draw_accepted_speculative_runs(trace_dict):
    trace_dict["steps"][1]["speculation"] = [{"request_id": "r1", "proposed": 3, "accepted": 1}]
    steps = [b for b in batching_beats(Trace.from_dict(trace_dict)) if isinstance(b, BatchStepBeat)]
    assert steps[1].lanes[0] == Lane("r1", "decode", 3, 4, "decoding · +2 (1/3 drafted) · 3/4 tokens")
    assert steps[1].caption == "step 1: one forward · 1 decode token + 3 draft tokens (1 accepted)"
    assert steps[2].lanes[0].tokens_out == 4  # the accepted token counts toward the request's output
