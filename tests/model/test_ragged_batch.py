"""One forward mixing a prefill chunk with decode steps of other sequences over scattered pages."""

from __future__ import annotations

import pytest
import torch
from astrai.model import ForwardBatch, ModelConfig, Transformer

PAGE_SIZE = 4
NUM_PAGES = 32
# Deliberately non-contiguous, out-of-order pages for each sequence.
PAGES = {"a": [11, 3, 17, 25], "b": [5, 20, 2, 9], "c": [7, 30]}


def make_model(preset: str) -> Transformer:
    model = Transformer(ModelConfig.preset(preset), dtype=torch.float32).eval()
    model.init_random_weights(seed=3, std=0.1)
    return model


def empty_cache(model: Transformer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    c = model.config
    shape = (NUM_PAGES, PAGE_SIZE, c.num_kv_heads, c.head_dim)
    return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(c.num_layers)]


def tokens(seed: int, n: int, vocab: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "tiny-gemma3"])
@pytest.mark.parametrize("a_cached", [0, 5])
def test_mixed_prefill_and_decode_equals_solo_runs(preset, a_cached):
    model = make_model(preset)
    vocab = model.config.vocab_size
    seq = {"a": tokens(1, 13, vocab), "b": tokens(2, 14, vocab), "c": tokens(3, 7, vocab)}
    caches = empty_cache(model)

    # History: b and c hold all but their last token in the cache; a holds `a_cached` tokens.
    history = {"b": seq["b"][:-1], "c": seq["c"][:-1]}
    if a_cached:
        history["a"] = seq["a"][:a_cached]
    names = list(history)
    model(
        ForwardBatch.build([history[n] for n in names], [0] * len(names), [PAGES[n] for n in names], PAGE_SIZE),
        caches, PAGE_SIZE,
    )

    # The mixed step, rows ordered b (decode), a (prefill chunk), c (decode).
    a_new = seq["a"][a_cached:]
    batch = ForwardBatch.build(
        [[seq["b"][-1]], a_new, [seq["c"][-1]]],
        [len(seq["b"]) - 1, a_cached, len(seq["c"]) - 1],
        [PAGES["b"], PAGES["a"], PAGES["c"]],
        PAGE_SIZE,
        logits_indices=list(range(len(a_new) + 2)),
    )
    assert batch.context_lens.tolist() == [14, 13, 7]
    got = model(batch, caches, PAGE_SIZE)
    assert got.dtype == torch.float32 and got.shape == (len(a_new) + 2, vocab)

    solo_a = model.logits(seq["a"])[a_cached:]
    solo_b = model.logits(seq["b"])[-1]
    solo_c = model.logits(seq["c"])[-1]
    torch.testing.assert_close(got[0], solo_b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1 : 1 + len(a_new)], solo_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[-1], solo_c, rtol=1e-4, atol=1e-4)


def test_decode_steps_continue_from_cache_and_only_requested_rows_return():
    model = make_model("tiny-llama")
    ids = tokens(4, 9, model.config.vocab_size)
    caches = empty_cache(model)
    model(ForwardBatch.build([ids[:5]], [0], [PAGES["a"]], PAGE_SIZE), caches, PAGE_SIZE)
    for pos in range(5, 9):
        out = model(ForwardBatch.build([[ids[pos]]], [pos], [PAGES["a"]], PAGE_SIZE), caches, PAGE_SIZE)
        assert out.shape == (1, model.config.vocab_size)
        torch.testing.assert_close(out[0], model.logits(ids[: pos + 1])[-1], rtol=1e-4, atol=1e-4)


def test_slot_minus_one_is_not_written():
    model = make_model("tiny-llama")
    caches = empty_cache(model)
    batch = ForwardBatch.build([[5, 6, 7]], [0], [PAGES["c"]], PAGE_SIZE, slot_mappings=[[28, -1, 30]])
    model(batch, caches, PAGE_SIZE)
    written = caches[0][0].view(-1, model.config.num_kv_heads, model.config.head_dim).abs().sum(dim=(1, 2))
    assert written.nonzero().flatten().tolist() == [28, 30]


def test_bfloat16_forward_tracks_float32():
    model32 = make_model("tiny-llama")
    model16 = make_model("tiny-llama").to(torch.bfloat16)
    ids = tokens(5, 24, model32.config.vocab_size)
    ref, low = model32.logits(ids), model16.logits(ids)
    assert low.dtype == torch.float32  # logits are always returned in float32
    assert float((low - ref).abs().max() / ref.abs().max()) < 0.05


def test_bad_batches_are_rejected():
    model = make_model("tiny-llama")
    with pytest.raises(ValueError, match="no KV cache"):
        model(ForwardBatch.build([[1]], [3], [PAGES["a"]], PAGE_SIZE), None, PAGE_SIZE)
    with pytest.raises(ValueError, match="beyond"):
        ForwardBatch.build([[1, 2, 3]], [7], [[0, 1]], PAGE_SIZE)
    with pytest.raises(ValueError, match="out of range"):
        model.logits([model.config.vocab_size])


def test_from_flat_is_the_builder_build_uses():
    per_seq = ForwardBatch.build([[5, 6, 7], [8]], [0, 4], [[3], [1, 2]], PAGE_SIZE)
    flat = ForwardBatch.from_flat([5, 6, 7, 8], [0, 1, 2, 4], [3 * PAGE_SIZE, 3 * PAGE_SIZE + 1, 3 * PAGE_SIZE + 2,
                                                              2 * PAGE_SIZE], [[3], [1, 2]], [3, 5], [0, 3, 4], [2, 3])
    for name in ("token_ids", "positions", "slot_mapping", "block_tables", "context_lens", "query_start_loc",
                 "logits_indices"):
        assert torch.equal(getattr(per_seq, name), getattr(flat, name)), name
    assert flat.block_tables.tolist() == [[3, 0], [1, 2]]  # padded with 0
