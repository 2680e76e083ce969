"""Everything a decode step honours holds at every verified position: penalties and logit_bias,
grammars, stop strings and tokens inside an accepted run, max_tokens, logprobs, n > 1,
min_tokens; streamed deltas carry several tokens; the trace and the counters record drafts.

Exact comparisons run on `exact_pair` (conftest: every row computed alone, so speculation on
and off must agree bit for bit without help from the kernels); streaming, traces and counters
run on the default engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astrai.scheduler import SamplingParams, StructuredOutputsParams

from .conftest import settle

WORKLOADS = json.loads((Path(__file__).resolve().parents[2] / "bench" / "speculation_workloads.json").read_text())


def prompt(tokenizer, workload: str, variant: int = 0) -> list[int]:
    return tokenizer.apply_chat_template(WORKLOADS["workloads"][workload][variant], tokenize=True)


def same_on_and_off(pair, prompts, params):
    """Run with speculation on and off; outputs must match in every field that describes the text.
    Returns the outputs (speculation on) and the draft tokens it accepted meanwhile."""
    on, off = pair
    before = on.stats()["spec_decode_num_accepted_tokens"]
    got = on.generate(prompts, params)
    want = off.generate(prompts, params)
    for a, b in zip(got, want, strict=True):
        assert (a.token_ids, a.text, a.finish_reason, a.stop_reason, a.index) == \
            (b.token_ids, b.text, b.finish_reason, b.stop_reason, b.index)
        assert a.logprobs == b.logprobs
    settle(on)
    settle(off)
    return got, on.stats()["spec_decode_num_accepted_tokens"] - before


def test_penalties_and_logit_bias_count_the_accepted_tokens_before_each_position(exact_pair):
    tok = exact_pair[0].tokenizer
    ids = prompt(tok, "code_edit")
    # mild enough that the copy goes on (so drafts are accepted), and still changing logits
    params = SamplingParams(max_tokens=40, temperature=0, repetition_penalty=1.05, presence_penalty=0.1,
                            frequency_penalty=0.05, logit_bias={tok.encode(" value")[0]: 0.5})
    _, accepted = same_on_and_off(exact_pair, [ids], params)
    assert accepted > 5


def test_stop_strings_and_stop_tokens_inside_an_accepted_run(exact_pair):
    tok = exact_pair[0].tokenizer
    ids = prompt(tok, "chat_repeat")
    free, _ = same_on_and_off(exact_pair, [ids], SamplingParams(max_tokens=60, temperature=0))
    text = free[0].text
    stop = text[text.index("Step 2") : text.index("Step 2") + 9]  # a string the copied answer contains
    token = free[0].token_ids[30]
    outs, accepted = same_on_and_off(exact_pair, [ids, ids], [SamplingParams(max_tokens=60, temperature=0, stop=[stop]),
                                                              SamplingParams(max_tokens=60, temperature=0,
                                                                             stop_token_ids=[token])])
    assert accepted > 5
    assert outs[0].finish_reason == "stop" and outs[0].stop_reason == stop and stop not in outs[0].text
    assert outs[1].finish_reason == "stop" and outs[1].stop_reason == token
    assert outs[1].token_ids == free[0].token_ids[: free[0].token_ids.index(token) + 1]


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5, 8, 13])
def test_max_tokens_is_never_overshot(exact_pair, max_tokens):
    ids = prompt(exact_pair[0].tokenizer, "json_reformat")
    outs, _ = same_on_and_off(exact_pair, [ids], SamplingParams(max_tokens=max_tokens, temperature=0,
                                                                ignore_eos=True, logprobs=1))
    assert len(outs[0].token_ids) == max_tokens == len(outs[0].logprobs)
    assert outs[0].finish_reason == "length"


def test_logprobs_of_every_accepted_token_and_n_samples(exact_pair):
    ids = prompt(exact_pair[0].tokenizer, "chat_repeat")
    outs, accepted = same_on_and_off(exact_pair, [ids], SamplingParams(max_tokens=40, temperature=0.7, seed=5,
                                                                      n=3, logprobs=2))
    assert accepted > 5 and len(outs) == 3 and {o.index for o in outs} == {0, 1, 2}
    assert len({tuple(o.token_ids) for o in outs}) > 1  # the choices draw different numbers
    for o in outs:
        assert [e["token_id"] for e in o.logprobs] == o.token_ids and all(len(e["top"]) == 2 for e in o.logprobs)


def test_min_tokens_bans_the_stop_tokens_at_every_verified_position(exact_pair):
    tok = exact_pair[0].tokenizer
    ids = prompt(tok, "chat_repeat")
    natural, _ = same_on_and_off(exact_pair, [ids], SamplingParams(max_tokens=200, temperature=0))
    n = len(natural[0].token_ids)
    assert natural[0].finish_reason == "stop"
    forced, _ = same_on_and_off(exact_pair, [ids], SamplingParams(max_tokens=n + 6, min_tokens=n + 3,
                                                                  temperature=0))
    assert len(forced[0].token_ids) >= n + 3
    assert not set(forced[0].token_ids[: n + 2]) & set(tok.eos_token_ids)


def test_grammar_masks_follow_the_draft_and_roll_back(exact_pair):
    ids = prompt(exact_pair[0].tokenizer, "json_reformat")
    schema = {"type": "object", "properties": {"region": {"type": "string"}, "sites": {"type": "array"}},
              "required": ["region", "sites"]}
    params = SamplingParams(max_tokens=80, temperature=0, structured_outputs=StructuredOutputsParams(
        json=schema, whitespace_pattern=r"[\n ]{0,8}"))
    outs, accepted = same_on_and_off(exact_pair, [ids, ids], [params, SamplingParams(
        max_tokens=60, temperature=0.9, seed=3, structured_outputs=StructuredOutputsParams(json_object=True))])
    assert accepted > 5
    assert outs[0].text.lstrip().startswith('{"region"') or outs[0].text.lstrip().startswith('{\n')


def test_streamed_deltas_carry_accepted_runs_and_the_trace_records_them(low_bit_engine):
    engine = low_bit_engine
    ids = prompt(engine.tokenizer, "chat_repeat")
    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        deltas = list(engine.stream(ids, SamplingParams(max_tokens=60, temperature=0)))
    finally:
        unsubscribe()
    whole = engine.generate([ids], SamplingParams(max_tokens=60, temperature=0, speculation=False))[0]
    streamed = [t for d in deltas for t in d.token_ids]
    assert streamed == whole.token_ids and "".join(d.text for d in deltas) == whole.text
    assert max(len(d.token_ids) for d in deltas) > 1
    rid = deltas[0].request_id
    records = [r for ev in events for r in ev.speculation if r["request_id"] == rid]
    assert records and all(0 <= r["accepted"] <= r["proposed"] for r in records)
    assert sum(r["accepted"] for r in records) > 5
    assert all(rid in ev.decode for ev in events for r in ev.speculation if r["request_id"] == rid)
    settle(engine)


def test_counters_and_the_per_request_opt_out(low_bit_engine):
    engine = low_bit_engine
    ids = prompt(engine.tokenizer, "code_edit")
    before = engine.stats()
    engine.generate([ids], SamplingParams(max_tokens=30, temperature=0, speculation=False))
    assert all(engine.stats()[k] == before[k] for k in ("spec_decode_num_drafts", "spec_decode_num_draft_tokens"))
    engine.generate([ids], SamplingParams(max_tokens=30, temperature=0))
    after = engine.stats()
    drafts = after["spec_decode_num_drafts"] - before["spec_decode_num_drafts"]
    proposed = after["spec_decode_num_draft_tokens"] - before["spec_decode_num_draft_tokens"]
    accepted = after["spec_decode_num_accepted_tokens"] - before["spec_decode_num_accepted_tokens"]
    assert 0 < drafts <= proposed and 0 < accepted <= proposed
    per_pos = after["spec_decode_num_accepted_tokens_per_pos"]
    assert sum(per_pos.values()) == after["spec_decode_num_accepted_tokens"]
    assert all(per_pos.get(p, 0) >= per_pos.get(p + 1, 0) for p in per_pos)  # a run from the first
    assert 0 < after["spec_decode_suffix_tokens"] <= after["spec_decode_suffix_capacity_tokens"]
    assert engine.describe().speculation == "suffix"
    settle(engine)
