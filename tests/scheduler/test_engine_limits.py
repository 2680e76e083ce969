"""Limits and failures: clear errors for bad input, and a failing step hurts only its requests."""

import json
import subprocess
import sys

import pytest
import torch
from astrai.scheduler import PHASES, JsonlTraceWriter, PromptTooLongError, SamplingParams, TraceEvent

from .conftest import settle


def test_overlong_prompt_error_states_both_numbers(make_engine):
    eng = make_engine(num_pages=64, max_model_len=40)
    assert eng.max_model_len == 40
    with pytest.raises(PromptTooLongError) as err:
        eng.add_request(list(range(100, 145)), SamplingParams())
    assert "45" in str(err.value) and "40" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_max_tokens_is_clamped_to_the_context(make_engine):
    eng = make_engine(num_pages=64, max_model_len=40)
    out = eng.generate([list(range(100, 136))], SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))[0]
    assert len(out.token_ids) == 4 and out.finish_reason == "length"
    settle(eng)


def test_max_model_len_defaults_to_model_limit_capped_by_pool(make_engine, engine):
    assert engine.max_model_len == min(engine.config.max_position_embeddings, engine.kv.capacity_tokens)
    small = make_engine(num_pages=8, page_size=16)
    assert small.max_model_len == 128


def test_bad_requests_raise_value_errors(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("", SamplingParams())
    with pytest.raises(ValueError, match="vocabulary"):
        engine.add_request([1, 10**9], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(["hi"], SamplingParams(temperature=-1))
    with pytest.raises(ValueError, match="request_id"):
        engine.add_request("hi", SamplingParams(max_tokens=200), request_id="dup")
        engine.add_request("hi", SamplingParams(max_tokens=200), request_id="dup")
    engine.abort("dup")
    settle(engine)


class FailsOnToken(torch.nn.Module):
    """The real model, except that a forward containing `poison` raises (fault injection)."""

    def __init__(self, model, poison: int):
        super().__init__()
        self.inner = model
        self.poison = poison
        self.config = model.config

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    @property
    def low_bit(self) -> bool:
        return self.inner.low_bit

    @property
    def backend(self) -> str:
        return self.inner.backend

    @property
    def kernels(self) -> str:
        return self.inner.kernels

    def weight_format(self) -> str:
        return self.inner.weight_format()

    def forward(self, batch, kv_caches, page_size):
        if bool((batch.token_ids == self.poison).any()):
            raise RuntimeError("injected failure")
        return self.inner(batch, kv_caches, page_size)


def test_a_model_exception_fails_only_that_steps_requests(engine, make_engine, prompts, greedy_alone):
    from astrai.scheduler import Engine

    poison = 31337
    eng = Engine(FailsOnToken(engine.model, poison), engine.tokenizer, num_pages=128, max_num_seqs=1)
    try:
        params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
        outs = eng.generate([prompts[0] + [poison], prompts[1]], params)
        assert outs[0].finish_reason == "error" and "injected failure" in outs[0].error
        assert outs[1].finish_reason == "length" and outs[1].token_ids == greedy_alone[1]
        assert eng.generate([prompts[2]], params)[0].token_ids == greedy_alone[2]  # still serving
        settle(eng)
        assert eng.kv.num_free_pages() + eng.kv.num_evictable_pages() == eng.kv.num_pages
    finally:
        eng.shutdown()


def test_trace_events_and_jsonl_writer(engine, prompts, tmp_path):
    path = tmp_path / "trace.jsonl"
    with JsonlTraceWriter(path) as writer:
        unsubscribe = engine.subscribe(writer)
        engine.generate(prompts[:4], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
        settle(engine)
        unsubscribe()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events and [e["step"] for e in events] == list(range(events[0]["step"], events[0]["step"] + len(events)))
    keys = {"step", "time", "phases_ms", "prefill", "decode", "arrived", "finished", "preempted", "pages",
            "page_tables", "num_waiting", "num_running", "num_free_pages", "num_cached_pages", "num_pages"}
    assert all(keys <= set(e) for e in events)
    assert sum(len(e["arrived"]) for e in events) == 4
    assert sum(p["num_tokens"] for e in events for p in e["prefill"]) + sum(
        p["cached_tokens"] for e in events for p in e["prefill"]
    ) >= sum(len(p) for p in prompts[:4])
    assert sum(len(e["decode"]) for e in events) == 4 * 2  # 3 tokens: 1 from prefill, 2 decodes
    assert sorted(f["request_id"] for e in events for f in e["finished"]) == sorted(
        {p["request_id"] for e in events for p in e["prefill"]}
    )
    assert any(e["pages"].get("allocated") for e in events)
    assert all(list(e["phases_ms"]) == list(PHASES) for e in events)  # named for what they time
    busy = [e for e in events if e["prefill"] or e["decode"]]
    assert busy and all(e["phases_ms"]["forward"] > 0 and e["phases_ms"]["sample"] > 0 for e in busy)
    assert all(TraceEvent.from_dict(e).to_dict() == e for e in events)  # the schema reads what it wrote


def test_stats_count_tokens_and_requests(engine, prompts):
    before = engine.stats()
    engine.generate(prompts[:2], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    settle(engine)
    after = engine.stats()
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == 6
    assert after["prompt_tokens_total"] - before["prompt_tokens_total"] == len(prompts[0]) + len(prompts[1])
    assert after["num_running"] == 0 and after["num_waiting"] == 0
    assert 0.0 <= after["kv_cache_usage"] <= 1.0


def test_shutdown_aborts_in_flight_requests(engine, prompts):
    from astrai.scheduler import Engine, EngineError

    with Engine(engine.model, engine.tokenizer, num_pages=64) as eng:
        stream = eng.stream(prompts[3], SamplingParams(max_tokens=500, temperature=0, ignore_eos=True))
        first = next(stream)
        assert not first.finished
    rest = list(stream)
    assert rest[-1].finished and rest[-1].finish_reason == "abort"
    eng.kv.check_invariants()
    with pytest.raises(EngineError):
        eng.generate(["hi"], SamplingParams(max_tokens=2))


def test_default_pool_size_is_capped(engine):
    from astrai.scheduler.memory import CPU_KV_CAP_BYTES, default_num_pages

    pages = default_num_pages(engine.config, torch.bfloat16, torch.device("cpu"), 16, 64)
    per_page = engine.config.kv_bytes_per_token(torch.bfloat16) * 16
    assert 1 <= pages and pages * per_page <= CPU_KV_CAP_BYTES


def test_the_engine_is_an_engine_client_and_describes_itself(engine, prompts):
    from astrai.scheduler import EngineClient, EngineStats

    assert isinstance(engine, EngineClient)
    assert set(engine.stats()) == set(EngineStats.__annotations__)
    info = engine.describe()
    assert (info.model, info.dtype, info.num_pages, info.max_num_seqs) == (engine.config.name, "float32", 2048, 32)
    assert info.max_model_len == engine.max_model_len and info.scheduling == "continuous" and info.prefix_cache
    assert info.modules["engine"] == "astrai.scheduler.engine" and info.modules["cache"] == "astrai.cache.manager"
    assert info.modules["model"] == "astrai.model.native_forward" and info.forward == "native"


def test_with_settings_builds_an_independent_engine_over_the_same_model(engine, prompts, greedy_alone):
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    with engine.with_settings(num_pages=64, max_num_seqs=2, scheduling="static") as other:
        assert other.model is engine.model and other.tokenizer is engine.tokenizer
        info = other.describe()
        assert (info.num_pages, info.max_num_seqs, info.scheduling) == (64, 2, "static")
        assert info.max_num_batched_tokens == engine.max_num_batched_tokens  # not given: taken from engine
        assert [o.token_ids for o in other.generate(prompts[:3], params)] == greedy_alone[:3]
        settle(other)
    with pytest.raises(TypeError, match="unknown Engine setting 'pages'"):
        engine.with_settings(pages=3)


def test_lookup_prefix_reports_the_cached_prefix_and_changes_nothing(make_engine, engine):
    eng = make_engine(num_pages=64, page_size=16, max_num_seqs=4)
    from astrai.scheduler import SamplingParams

    prompt = engine.tokenizer.encode("The printing press spread literacy across Europe. " * 6)
    assert len(prompt) > 48
    assert eng.lookup_prefix(prompt) == 0
    eng.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0))
    assert eng.wait_idle(60)
    before = eng.stats()
    cached = eng.lookup_prefix(prompt + [5, 6, 7])
    assert cached == len(prompt) // 16 * 16  # whole pages of the prompt
    assert eng.lookup_prefix(prompt[:5]) == 0  # less than a page
    assert eng.lookup_prefix([7] + prompt) == 0  # another first token: no shared prefix
    after = eng.stats()
    assert (after["prefix_cache_queries"], after["prefix_cache_hits"]) == (before["prefix_cache_queries"],
                                                                          before["prefix_cache_hits"])
    assert make_engine(num_pages=64, enable_prefix_cache=False).lookup_prefix(prompt) == 0


EXIT_WHILE_GENERATING = """
import threading
from astrai.scheduler import Engine, SamplingParams
eng = Engine.from_pretrained("smollm2-135m-instruct")
first = threading.Event()
eng.add_request(list(range(100, 612)), SamplingParams(max_tokens=400, temperature=0, ignore_eos=True),
                sink=lambda out: first.set(), stream=True)
assert first.wait(120), "no token streamed"
print("exiting mid-generation", flush=True)
"""


def test_interpreter_exit_while_generating_is_clean():
    # The engine thread is still stepping when the script ends: exit must stop it first, not die
    # with SIGABRT when the thread next takes the GIL inside a torch call.
    result = subprocess.run([sys.executable, "-c", EXIT_WHILE_GENERATING], capture_output=True, text=True,
                            timeout=300)
    assert "exiting mid-generation" in result.stdout, result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "terminate called" not in result.stderr
