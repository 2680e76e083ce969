"""logit_bias, n > 1 siblings sharing the prompt's KV pages, and prompt logprobs pinned to transformers."""

from __future__ import annotations

import pytest
import torch
from astrai.scheduler import SamplingParams

from .conftest import TEXT, settle


def test_logit_bias_forces_and_bans(engine):
    tok = engine.tokenizer
    prompt = tok.encode("The capital of France is")
    greedy = engine.generate([prompt], SamplingParams(max_tokens=4, temperature=0.0))[0].token_ids
    banned = engine.generate([prompt], SamplingParams(max_tokens=4, temperature=0.0,
                                                      logit_bias={greedy[0]: -100.0}))[0]
    assert banned.token_ids[0] != greedy[0]
    target = tok.encode(" banana")[0]
    forced = engine.generate([prompt], SamplingParams(max_tokens=3, temperature=1.0, seed=1,
                                                      logit_bias={target: 100.0}))[0]
    assert forced.token_ids == [target] * 3


@pytest.mark.parametrize("bias", [{-1: 1.0}, {5: 101.0}, {5: float("nan")}, {"5": 1.0}])
def test_logit_bias_validation(bias):
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias=bias)


def test_logit_bias_token_outside_vocabulary(engine):
    with pytest.raises(ValueError, match="logit_bias"):
        engine.add_request([1, 2], SamplingParams(logit_bias={10**6: 1.0}))


def test_n_siblings_share_the_prompt_pages_and_keep_their_own_seeds(engine):
    prompt = engine.tokenizer.encode(TEXT)  # > 4 full pages of 16 tokens
    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        before = engine.stats()
        outs = engine.generate([prompt], SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=11))
        settle(engine)
        after = engine.stats()
    finally:
        unsubscribe()
    assert [o.index for o in outs] == [0, 1, 2, 3]
    assert len({tuple(o.token_ids) for o in outs}) > 1  # each sibling draws its own tokens
    again = engine.generate([prompt], SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=11))
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]  # reproducible with the seed
    prefilled = [p for e in events for p in e.to_dict()["prefill"]]
    full = len(prompt) // 16 * 16
    computed = sum(p["num_tokens"] for p in prefilled)
    assert computed <= len(prompt) + 3 * (len(prompt) - full + 16), prefilled  # one prefill + short tails
    assert sum(1 for p in prefilled if p["cached_tokens"] >= full - 16) >= 3
    assert after["prefix_cache_hits"] - before["prefix_cache_hits"] >= 3 * (full - 16)


def test_prompt_logprobs_equal_transformers_log_softmax(engine, hf_model):
    prompt = engine.tokenizer.encode(TEXT)[:70]  # several chunks' worth with a small budget below
    engine.generate([prompt], SamplingParams(max_tokens=1))  # put the prompt in the prefix cache first
    out = engine.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=2))[0]
    with torch.no_grad():
        ref = torch.log_softmax(hf_model(torch.tensor([prompt])).logits[0].float(), dim=-1)
    lps = out.prompt_logprobs
    assert lps is not None and len(lps) == len(prompt) and lps[0] is None
    for i in range(1, len(prompt)):
        entry = lps[i]
        assert entry["token_id"] == prompt[i]
        assert entry["logprob"] == pytest.approx(ref[i - 1, prompt[i]].item(), abs=2e-3)
        top_ids = [t for t, _ in entry["top"]]
        assert top_ids == ref[i - 1].topk(2).indices.tolist()
    assert out.num_cached_tokens == 0  # scoring reads every prompt position, so the cache is bypassed


def test_prompt_logprobs_across_chunked_prefill(make_engine, engine):
    small = make_engine(max_num_batched_tokens=24, num_pages=64, max_num_seqs=4)
    prompt = engine.tokenizer.encode(TEXT)[:70]
    chunked = small.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=0))[0].prompt_logprobs
    whole = engine.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=0))[0].prompt_logprobs
    assert [e and e["token_id"] for e in chunked] == [e and e["token_id"] for e in whole]
    for a, b in zip(chunked[1:], whole[1:], strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)


def test_abort_stops_every_sibling(engine):
    import queue

    outs: queue.Queue = queue.Queue()
    rid = engine.add_request(engine.tokenizer.encode(TEXT), SamplingParams(n=3, max_tokens=200, ignore_eos=True),
                             sink=outs.put)
    engine.abort(rid)
    finals = [outs.get(timeout=60) for _ in range(3)]
    assert sorted(o.index for o in finals) == [0, 1, 2]
    assert all(o.finished and o.finish_reason == "abort" for o in finals)
