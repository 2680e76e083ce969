"""Batch invariance by default: a request's logits are bitwise the same whatever else shares its
steps, however its prompt is chunked, whether its prefix came from the radix cache, and after
preemption and recompute; so greedy and seeded-sampled outputs are too.

Each check runs on the default engine (packed weights, the fused native step, float16 KV), the
float32 native engine and the Python layers' engine. Prompt lengths are chosen so the part a
prefix-cache hit leaves to compute is 1 to 16 tokens (pages of 16).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from astrai.model import ForwardBatch
from astrai.scheduler import SamplingParams

from .conftest import TEXT, mixed_prompts, settle

ENGINES = ("low_bit_engine", "engine", "torch_engine")
LENGTHS = (17, 21, 25, 32, 33, 40)  # uncached tails on a hit: 1, 5, 9, 16, 1, 8
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, logprobs=5, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.95, seed=1234, logprobs=2, ignore_eos=True)


@pytest.fixture(params=ENGINES)
def any_engine(request):
    return request.getfixturevalue(request.param)


def invariance_prompts(tokenizer) -> list[list[int]]:
    ids = tokenizer.encode(TEXT * 2)
    return [ids[i : i + n] for i, n in enumerate(LENGTHS)]


def cold(engine, batch, params):
    """Outputs with the prefix cache emptied first (prompts of one batch may still share pages)."""
    settle(engine)
    engine.kv.clear_prefix_cache()
    return engine.generate(batch, params)


def same(a, b) -> None:
    assert a.token_ids == b.token_ids
    assert a.logprobs == b.logprobs  # every chosen token's logprob and top-k, bitwise


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_cold_hit_batched_and_chunked_agree_bitwise(any_engine, params):
    batch = invariance_prompts(any_engine.tokenizer)
    reference = cold(any_engine, batch, params)
    assert all(o.num_cached_tokens == 0 for o in reference)  # no two of these prompts share a page
    assert len({tuple(o.token_ids) for o in reference}) > 1
    # the same prompts again: their prefixes come from the radix cache
    hit = any_engine.generate(batch, params)
    assert all(o.num_cached_tokens > 0 for o in hit)
    for a, b in zip(hit, reference, strict=True):
        same(a, b)
    # each prompt alone, cold
    for prompt, expected in zip(batch, reference, strict=True):
        same(cold(any_engine, [prompt], params)[0], expected)
    # inside a batch of 16 other requests of mixed lengths
    others = mixed_prompts(any_engine.tokenizer, 16)
    mixed = cold(any_engine, [batch[3]] + others + [batch[5]], params)
    same(mixed[0], reference[3])
    same(mixed[-1], reference[5])
    # prompts prefilled in chunks of at most 64 tokens shared with the others' decode rows
    with any_engine.with_settings(max_num_batched_tokens=64, num_pages=512) as chunked:
        outs = cold(chunked, batch + others, params)
        settle(chunked)
    for a, b in zip(outs, reference, strict=False):
        same(a, b)


def test_preemption_and_recompute_change_nothing(any_engine):
    tokenizer = any_engine.tokenizer
    long_prompts = [tokenizer.encode(TEXT)[i:] for i in range(6)]
    params = [SamplingParams(max_tokens=60, temperature=0.0 if i % 2 else 0.8, seed=i, logprobs=1, ignore_eos=True)
              for i in range(len(long_prompts))]
    roomy = cold(any_engine, long_prompts, params)
    # 384 token slots for six ~150-token sequences: preemption is certain
    with any_engine.with_settings(num_pages=24) as tight:
        squeezed = cold(tight, long_prompts, params)
        assert tight.stats()["num_preemptions_total"] > 0
        settle(tight)
    for a, b in zip(squeezed, roomy, strict=True):
        same(a, b)


@pytest.mark.parametrize("chunk", [2, 5, 8])
def test_a_position_decoded_alone_equals_its_row_in_a_chunk(any_engine, chunk):
    """What speculative verification needs: the logits of position p are the same whether p is one
    decode row or one row of a k-token chunk over the cached prefix."""
    model, config = any_engine.model, any_engine.config
    ids = any_engine.tokenizer.encode(TEXT)[:40]
    prefix, page = 27, 16
    pages = list(range(-(-len(ids) // page)))
    dtype = any_engine.kv.kv.dtype

    def fresh_cache():
        shape = (len(pages), page, config.num_kv_heads, config.head_dim)
        return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(config.num_layers)]

    def run(kv, start, end, rows):
        batch = ForwardBatch.build([ids[start:end]], [start], [pages], page, logits_indices=rows)
        return model.forward(batch, kv, page)

    alone_kv, chunk_kv = fresh_cache(), fresh_cache()
    run(alone_kv, 0, prefix, [prefix - 1])
    run(chunk_kv, 0, prefix, [prefix - 1])
    alone = torch.cat([run(alone_kv, p, p + 1, [0]) for p in range(prefix, prefix + chunk)])
    together = run(chunk_kv, prefix, prefix + chunk, list(range(chunk)))
    assert torch.equal(alone, together)


PURE_TORCH = textwrap.dedent("""
    import torch
    from astrai.scheduler import Engine, SamplingParams
    engine = Engine.from_pretrained("smollm2-135m-instruct", num_pages=256, max_num_seqs=8)
    assert engine.describe().kernels == "torch", engine.describe()
    ids = engine.tokenizer.encode("The history of the printing press begins in the fifteenth century, when Johannes "
                                  "Gutenberg combined movable metal type, oil-based ink and a wooden screw press.")
    assert len(ids) > 17, len(ids)
    params = SamplingParams(max_tokens=4, temperature=0.0, logprobs=3, ignore_eos=True)
    cold = engine.generate([ids], params)[0]
    hit = engine.generate([ids], params)[0]
    assert hit.num_cached_tokens > 0
    batched = engine.generate([ids[:5], ids, ids[:9]], params)[1]
    engine.shutdown()
    assert cold.token_ids == hit.token_ids == batched.token_ids
    assert cold.logprobs == hit.logprobs == batched.logprobs
    print("invariant", cold.logprobs[0]["logprob"])
""")


def test_the_pure_torch_path_is_invariant_on_its_own():
    """No native kernels at all (ASTRAI_KERNELS=torch): the torch twins keep the same property."""
    env = dict(os.environ, ASTRAI_KERNELS="torch")
    result = subprocess.run([sys.executable, "-c", PURE_TORCH], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "invariant" in result.stdout
