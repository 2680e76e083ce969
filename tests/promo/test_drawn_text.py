"""The numbers of the trace are what the scenes draw: build the real mobjects, read their text."""

from __future__ import annotations

import pytest
from astrai.promo import Trace, architecture_beats, batching_beats, paged_cache_beats
from astrai.promo.beats import BatchStepBeat, LayerBeat, PoolStepBeat

pytestmark = pytest.mark.usefixtures("manim_media")


def _chart_texts(trace_dict) -> list[str]:
    from astrai.promo.scenes.batching import throughput_chart
    from astrai.promo.scenes.style import drawn_texts

    return drawn_texts(throughput_chart(batching_beats(Trace.from_dict(trace_dict))[-1]))


def test_measured_ratio_is_drawn_and_follows_the_trace(trace_dict):
    texts = _chart_texts(trace_dict)
    assert "continuous batching: 3.42× the throughput of static batching" in texts
    assert "342 tok/s" in texts and "100 tok/s" in texts

    trace_dict["throughput"]["ratio"] = 2.05
    trace_dict["throughput"]["continuous"]["tokens_per_s"] = 205.0
    changed = _chart_texts(trace_dict)
    assert "continuous batching: 2.05× the throughput of static batching" in changed
    assert "205 tok/s" in changed
    assert not any("3.42" in t or "342" in t for t in changed)


def test_model_numbers_are_drawn_on_the_architecture(trace_dict):
    from astrai.promo.scenes.architecture import layer_card
    from astrai.promo.scenes.style import drawn_texts

    def model_card_texts(d):
        layer = next(b.layer for b in architecture_beats(Trace.from_dict(d))
                     if isinstance(b, LayerBeat) and b.layer.key == "model")
        return drawn_texts(layer_card(layer, 0.0)[1])

    texts = model_card_texts(trace_dict)
    assert "9 query / 3 KV heads (GQA 3:1) · 134.5M parameters · float32" in texts
    assert "astrai-model 0.1.0 · astrai.model.transformer" in texts
    trace_dict["model"]["num_parameters"] = 1_234_000_000
    assert "9 query / 3 KV heads (GQA 3:1) · 1.23B parameters · float32" in model_card_texts(trace_dict)


def test_step_captions_are_drawn(trace_dict):
    from astrai.promo.scenes.batching import lane_texts
    from astrai.promo.scenes.batching import step_texts as batch_texts
    from astrai.promo.scenes.paged_cache import page_tables, pool_labels
    from astrai.promo.scenes.paged_cache import step_texts as pool_texts
    from astrai.promo.scenes.style import drawn_texts

    trace = Trace.from_dict(trace_dict)
    step = next(b for b in batching_beats(trace) if isinstance(b, BatchStepBeat) and b.step == 2)
    texts = drawn_texts(batch_texts(step)) + drawn_texts(lane_texts(step.lanes))
    assert "free-page bitmask (12 pages): 9 of 12 free" in texts
    assert "prefill 1 token, 4 cached" in texts and "r2 arrives" in texts

    pool = next(b for b in paged_cache_beats(trace) if isinstance(b, PoolStepBeat) and b.step == 2)
    texts = drawn_texts(pool_texts(pool)) + drawn_texts(pool_labels(pool.cells)) + drawn_texts(page_tables(pool.tables))
    assert "step 2: 3 in use · 0 cached · 9 free" in texts
    assert "×2" in texts  # page 0 held by r1 and r2


def test_the_loop_shows_the_phases_the_engine_times_with_their_means(trace_dict):
    from astrai.promo.scenes.batching import loop_diagram
    from astrai.promo.scenes.style import drawn_texts

    texts = drawn_texts(loop_diagram(batching_beats(Trace.from_dict(trace_dict))[0].phases))
    assert texts == ["Schedule", "0.3 ms avg", "Build batch", "1.3 ms avg", "Forward", "4.0 ms avg",
                     "Sample", "1.0 ms avg"]  # batch building is not "Prefill", sampling not "Decode"
