"""Paged attention and the KV write: native kernel and torch twin against an independent reference.

The reference gathers each sequence's K/V slot by slot from its block table and runs float64
scaled_dot_product_attention with an explicit causal mask, one sequence at a time. Caches are
filled with NaN wherever no token lives, so any read past a context or outside its pages shows.
Tolerance: float32 math against a float64 reference, |err| <= 3e-6 + 1e-5 |ref| (outputs are
convex combinations of O(1) values; observed errors are ~1e-6 at 2048 keys).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from astrai.model import ForwardBatch, ModelConfig
from astrai.model.batch import AttentionPlan
from astrai.model.kernels import native, native_unavailable_reason, ops
from astrai.model.kernels.attention import kv_write, kv_write_torch, paged_attention, paged_attention_torch
from astrai.model.kernels.build import NativeUnavailable, check_machine
from astrai.model.layers import Attention

RTOL, ATOL = 1e-5, 3e-6


@dataclass
class Case:
    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    query_start_loc: torch.Tensor
    scale: float

    def args(self) -> tuple:
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.query_start_loc, self.scale)


def make_case(
    specs: list[tuple[int, int]],
    heads: int,
    kv_heads: int,
    head_dim: int,
    page_size: int,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    q_gain: float = 1.0,
    fill: float = float("nan"),
) -> Case:
    """specs: (cached prefix, new query rows) per sequence. Pages are a shuffled, non-monotonic
    subset of a larger pool; every slot outside a context holds `fill`."""
    generator = torch.Generator().manual_seed(seed)
    counts = [-(-(prefix + rows) // page_size) for prefix, rows in specs]
    num_pages = sum(counts) + 7
    order = torch.randperm(num_pages, generator=generator).tolist()
    k_cache = torch.full((num_pages, page_size, kv_heads, head_dim), fill, dtype=dtype)
    v_cache = torch.full_like(k_cache, fill)
    tables, used = [], 0
    for (prefix, rows), count in zip(specs, counts, strict=True):
        table = order[used : used + count]
        used += count
        tables.append(table)
        positions = torch.arange(prefix + rows)
        pages, offsets = torch.tensor(table)[positions // page_size], positions % page_size
        k_cache[pages, offsets] = torch.randn(prefix + rows, kv_heads, head_dim, generator=generator).to(dtype)
        v_cache[pages, offsets] = torch.randn(prefix + rows, kv_heads, head_dim, generator=generator).to(dtype)
    width = max(len(t) for t in tables) + 1  # one spare column of padding (page 0)
    block_tables = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    rows = [r for _, r in specs]
    starts = [0]
    for r in rows:
        starts.append(starts[-1] + r)
    q = q_gain * torch.randn(starts[-1], heads, head_dim, generator=generator)
    return Case(
        q=q,
        k_cache=k_cache,
        v_cache=v_cache,
        block_tables=block_tables,
        context_lens=torch.tensor([p + r for p, r in specs], dtype=torch.int32),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        scale=1.0 / math.sqrt(head_dim),
    )


def reference(case: Case) -> torch.Tensor:
    """float64 SDPA per sequence on K/V gathered slot by slot, explicit causal mask."""
    out = torch.empty(case.q.shape, dtype=torch.float64)
    page_size, kv_heads = case.k_cache.shape[1], case.k_cache.shape[2]
    group = case.q.shape[1] // kv_heads
    for b in range(case.context_lens.shape[0]):
        context = int(case.context_lens[b])
        start, end = int(case.query_start_loc[b]), int(case.query_start_loc[b + 1])
        positions = torch.arange(context)
        pages, offsets = case.block_tables[b].long()[positions // page_size], positions % page_size
        keys = case.k_cache[pages, offsets].double().repeat_interleave(group, dim=1)  # [L, H, D]
        values = case.v_cache[pages, offsets].double().repeat_interleave(group, dim=1)
        positions = torch.arange(context - (end - start), context)
        mask = torch.arange(context)[None, :] <= positions[:, None]
        attended = F.scaled_dot_product_attention(
            case.q[start:end].double().transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1),
            attn_mask=mask, scale=case.scale,
        )
        out[start:end] = attended.transpose(0, 1)
    return out


def check(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=RTOL, atol=ATOL)


def run_native(case: Case, out: torch.Tensor | None = None) -> torch.Tensor:
    out = torch.full(case.q.shape, float("nan")) if out is None else out
    ops().paged_attention(*case.args(), out)
    return out


# Mixed batch: decodes at contexts on, before and after page boundaries, a chunk after a cached
# prefix, a fresh prefill, and a one-token sequence whose context is just itself.
MIXED = [(0, 1), (14, 1), (15, 1), (16, 1), (40, 25), (0, 37), (130, 1), (7, 2), (31, 1)]
SHAPES = {  # (heads, kv_heads, head_dim, page_size)
    "gqa3-d64-p16": (9, 3, 64, 16),
    "mha-d128-p8": (4, 4, 128, 8),
    "gqa4-d128-p16": (8, 2, 128, 16),
    "gqa4-d64-p8": (16, 4, 64, 8),
}
KV_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_mixed_ragged_batch_matches_reference(native_kernels, shape, kv_dtype):
    case = make_case(MIXED, *shape, kv_dtype, seed=hash(shape) % 1000)
    expected = reference(case)
    check(run_native(case), expected)
    check(paged_attention_torch(*case.args()), expected)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_long_contexts_split_across_threads(native_kernels, threads, kv_dtype):
    """2048-token contexts: one decode (its keys split into pieces when threads > 1, partial
    softmaxes merged), a 64-row chunk after a 1984-token prefix, a 300-row fresh prefill."""
    case = make_case([(2047, 1), (1984, 64), (0, 300)], 9, 3, 64, 16, kv_dtype, seed=5)
    expected = reference(case)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check(run_native(case), expected)
        single = make_case([(1500, 1)], 9, 3, 64, 16, kv_dtype, seed=6)  # few items: split for sure
        check(run_native(single), reference(single))
    finally:
        torch.set_num_threads(before)
    check(paged_attention_torch(*case.args()), expected)


def only_sequence(case: Case, b: int) -> Case:
    """Sequence b of a batch as a batch of its own (same cache, same pages)."""
    start, end = int(case.query_start_loc[b]), int(case.query_start_loc[b + 1])
    return Case(case.q[start:end].clone(), case.k_cache, case.v_cache, case.block_tables[b:b + 1],
                case.context_lens[b:b + 1], torch.tensor([0, end - start], dtype=case.query_start_loc.dtype), case.scale)


def test_a_sequence_gets_the_same_bits_alone_batched_and_on_one_thread(native_kernels):
    """Batch invariance: key pieces are cut by a sequence's own context, never by the batch or the
    thread count, so each sequence's output is bitwise the same in every arrangement."""
    specs = [(2047, 1), (700, 1), (90, 1), (0, 1), (1984, 64), (0, 300), (130, 2)]
    case = make_case(specs, 9, 3, 64, 16, torch.float16, seed=8)
    before = torch.get_num_threads()
    try:
        outputs = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs[threads, "batch"] = run_native(case)
            outputs[threads, "alone"] = torch.cat([run_native(only_sequence(case, b)) for b in range(len(specs))])
    finally:
        torch.set_num_threads(before)
    first = outputs[1, "batch"]
    for key, out in outputs.items():
        assert torch.equal(out, first), f"{key} differs from one thread, whole batch"


def test_single_token_is_its_own_context(native_kernels):
    case = make_case([(0, 1)], 9, 3, 64, 16, torch.float32)
    out = run_native(case)
    # one key: softmax weight 1, the output is that token's value, exactly
    v = case.v_cache[int(case.block_tables[0, 0]), 0].repeat_interleave(3, dim=0)
    torch.testing.assert_close(out[0], v, rtol=0, atol=0)


def test_peaky_softmax(native_kernels):
    """Large scores (q x 8) exercise the running maximum and rescaling across tiles."""
    case = make_case([(300, 1), (100, 40), (0, 90)], 9, 3, 64, 8, torch.float16, seed=2, q_gain=8.0)
    expected = reference(case)
    # scores reach ~30 here, and a float32 score carries ~2e-6 absolute rounding, which the
    # softmax passes on: the torch twin in float32 is off by the same ~1e-5
    for actual in (run_native(case), paged_attention_torch(*case.args())):
        torch.testing.assert_close(actual.double(), expected, rtol=RTOL, atol=2e-5)


def test_strided_q_and_out_views(native_kernels):
    """q sliced out of a fused qkv output, out a view into a wider buffer: no copies needed."""
    heads, kv_heads, dim = 9, 3, 64
    case = make_case(MIXED, heads, kv_heads, dim, 16, torch.float16, seed=9)
    tokens = case.q.shape[0]
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim)
    q = qkv[:, : heads * dim].view(tokens, heads, dim)
    q.copy_(case.q)
    wide = torch.full((tokens, heads * dim + 16), -7.0)
    out = wide[:, 8 : 8 + heads * dim].view(tokens, heads, dim)
    assert not q.is_contiguous() and not out.is_contiguous()
    case.q = q
    run_native(case, out)
    check(out, reference(case))
    assert bool((wide[:, :8] == -7.0).all()) and bool((wide[:, -8:] == -7.0).all())


def test_agrees_with_the_model_attention_path(native_kernels):
    """Same answer as astrai.model.layers.Attention's gather + SDPA path (AttentionPlan)."""
    config = ModelConfig.preset("smollm2-135m-instruct")
    heads, kv_heads, dim, page_size = config.num_heads, config.num_kv_heads, config.head_dim, 16
    specs = [(50, 1), (0, 12), (33, 1), (20, 9)]
    # finite filler: the layer's padded decode gather reads (and masks) slots past a context
    case = make_case(specs, heads, kv_heads, dim, page_size, torch.float32, seed=4, fill=1e4)
    tables = [[int(p) for p in row[: -(-(a + b) // page_size)]] for row, (a, b) in zip(case.block_tables, specs, strict=True)]
    batch = ForwardBatch.build([[1] * rows for _, rows in specs], [p for p, _ in specs], tables, page_size)
    plan = AttentionPlan.build(batch, page_size, has_cache=True)
    attention = Attention(config, torch.float32, torch.device("cpu"))
    k_flat = case.k_cache.view(-1, kv_heads, dim)
    v_flat = case.v_cache.view(-1, kv_heads, dim)
    # the layer reads a fresh prefill's K/V from its new rows, a continuation's from the cache
    k_rows, v_rows = k_flat[batch.slot_mapping], v_flat[batch.slot_mapping]
    expected = torch.empty_like(case.q)
    expected[plan.decode_rows] = attention._decode(case.q[plan.decode_rows], k_flat, v_flat, plan)
    for seq in plan.prefills:
        expected[seq.start : seq.end] = attention._prefill(case.q, k_rows, v_rows, k_flat, v_flat, seq)
    torch.testing.assert_close(run_native(case), expected, rtol=RTOL, atol=ATOL)


def test_dispatcher_uses_native_for_float32_and_torch_otherwise(native_kernels):
    case = make_case(MIXED, 9, 3, 64, 16, torch.bfloat16, seed=11)
    expected = reference(case)
    if native() is not None:
        torch.testing.assert_close(paged_attention(*case.args()), run_native(case), rtol=0, atol=0)
    bf16 = paged_attention(case.q.bfloat16(), *case.args()[1:])  # not the kernel's dtype: the torch path
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.double(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_kv_write_converts_and_skips(native_kernels, kv_dtype):
    kv_heads, dim, tokens = 3, 64, 11
    qkv = torch.randn(tokens, (9 + 2 * kv_heads) * dim) * 3
    k = qkv[:, 9 * dim : (9 + kv_heads) * dim].view(tokens, kv_heads, dim)
    v = qkv[:, (9 + kv_heads) * dim :].view(tokens, kv_heads, dim)
    slots = torch.tensor([5, -1, 40, 41, -1, 0, 77, 63, 12, -1, 3])
    native_k = torch.full((10, 8, kv_heads, dim), 9.0, dtype=kv_dtype)
    native_v = native_k.clone()
    torch_k, torch_v = native_k.clone(), native_v.clone()
    ops().kv_write(k, v, native_k, native_v, slots)
    kv_write_torch(k, v, torch_k, torch_v, slots)
    assert torch.equal(native_k, torch_k) and torch.equal(native_v, torch_v)  # same rounding, bit for bit
    flat_k = native_k.view(-1, kv_heads, dim)
    written = slots[slots >= 0]
    assert torch.equal(flat_k[written], k[slots >= 0].to(kv_dtype))
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool)
    untouched[written] = False
    assert bool((flat_k[untouched] == 9.0).all())
    kv_write(k, v, torch_k, torch_v, torch.full((tokens,), -1))  # all skipped: nothing changes
    assert torch.equal(native_k, torch_k)


def test_kv_write_then_attend_round_trip(native_kernels):
    """Write a prefill's K/V with kv_write, then attend over them: the layer's two steps."""
    case = make_case([(24, 1), (0, 20)], 9, 3, 64, 8, torch.float16, seed=13)
    page_size = case.k_cache.shape[1]
    fresh = torch.randn(20, 3, 64), torch.randn(20, 3, 64)
    table = case.block_tables[1]
    slots = torch.tensor([int(table[j // page_size]) * page_size + j % page_size for j in range(20)])
    kv_write(fresh[0], fresh[1], case.k_cache, case.v_cache, slots)
    check(run_native(case), reference(case))


ERRORS = {
    "page outside the cache": (lambda c: c.block_tables.__setitem__((0, 0), 10_000), "outside the cache"),
    "context shorter than queries": (lambda c: c.context_lens.__setitem__(1, 3), "context"),
    "block table too narrow": (lambda c: setattr(c, "block_tables", c.block_tables[:, :1].contiguous()), "pages"),
    "wrong q dtype": (lambda c: setattr(c, "q", c.q.double()), "float32"),
    "heads not a multiple": (lambda c: setattr(c, "q", c.q[:, :8].contiguous()), "multiple"),
    "query_start_loc not ending at T": (lambda c: c.query_start_loc.__setitem__(-1, 1), "query_start_loc"),
}


@pytest.mark.parametrize("mutate, message", ERRORS.values(), ids=ERRORS.keys())
def test_bad_inputs_raise_clear_errors(native_kernels, mutate, message):
    case = make_case([(30, 1), (0, 12)], 9, 3, 64, 16, torch.float32)
    mutate(case)
    with pytest.raises(RuntimeError, match=message):
        ops().paged_attention(*case.args(), torch.empty(case.q.shape))


def test_native_kernels_load_wherever_they_can_build():
    """Where a compiler and AVX2 exist the kernels must build: a silent torch fallback there is a bug."""
    try:
        check_machine()
    except NativeUnavailable as exc:
        pytest.skip(f"no native kernels on this machine: {exc}")
    if os.environ.get("ASTRAI_KERNELS", "").lower() == "torch":
        pytest.skip("ASTRAI_KERNELS=torch forces the torch path")
    assert native() is not None, native_unavailable_reason()
