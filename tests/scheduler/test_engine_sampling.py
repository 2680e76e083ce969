"""Seeded sampling is reproducible whatever shares the batch; logprobs and min_tokens work."""

import math

from astrai.scheduler import SamplingParams

from .conftest import settle


def test_seed_gives_same_tokens_alone_and_in_a_busy_batch(engine, prompts):
    params = SamplingParams(max_tokens=6, temperature=0.9, top_p=0.95, top_k=50, seed=1234, ignore_eos=True)
    target = prompts[5]
    alone = engine.generate([target], params)[0].token_ids
    again = engine.generate([target], params)[0].token_ids
    assert alone == again
    noise = [
        SamplingParams(max_tokens=4 + i % 5, temperature=1.0, ignore_eos=True, seed=None if i % 2 else i)
        for i in range(12)
    ]
    batch = prompts[:12]
    plist = noise[:6] + [params] + noise[6:]
    outs = engine.generate(batch[:6] + [target] + batch[6:], plist)
    assert outs[6].token_ids == alone
    other_seed = engine.generate([target], SamplingParams(**{**_fields(params), "seed": 99}))[0].token_ids
    assert other_seed != alone  # the seed matters
    settle(engine)


def _fields(p: SamplingParams) -> dict:
    return {k: getattr(p, k) for k in ("max_tokens", "temperature", "top_p", "top_k", "ignore_eos")}


def test_logprobs_match_the_chosen_greedy_token(engine, prompts):
    out = engine.generate([prompts[3]], SamplingParams(max_tokens=4, temperature=0, logprobs=3, ignore_eos=True))[0]
    assert len(out.logprobs) == 4
    for tid, entry in zip(out.token_ids, out.logprobs, strict=True):
        assert entry["token_id"] == tid
        assert entry["top"][0][0] == tid  # greedy picks the most likely token
        assert entry["logprob"] <= 0 and math.isclose(entry["logprob"], entry["top"][0][1], abs_tol=1e-6)
        assert len(entry["top"]) == 3


def test_min_tokens_suppresses_eos_and_eos_stops_otherwise(engine):
    chat = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True)
    free = engine.generate([chat], SamplingParams(max_tokens=40, temperature=0))[0]
    assert free.finish_reason == "stop" and free.token_ids[-1] in engine.tokenizer.eos_token_ids
    n = len(free.token_ids) + 3
    forced = engine.generate([chat], SamplingParams(max_tokens=n, min_tokens=n, temperature=0))[0]
    assert len(forced.token_ids) == n and forced.finish_reason == "length"
    assert not set(forced.token_ids) & set(engine.tokenizer.eos_token_ids)
    settle(engine)
