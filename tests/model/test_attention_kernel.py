"""Paged attention and the KV write, on every kernel variant this CPU runs.

The reference gathers each sequence's K/V slot by slot from its block table and runs float64
scaled_dot_product_attention with an explicit causal (and, with a window w, sliding-window:
a query at position p sees keys p - w + 1 .. p) mask, one sequence at a time. Caches are filled
with NaN wherever no token lives, so any read past a context or outside its pages shows.
Tolerance: float32 math against a float64 reference, |err| <= 3e-6 + 1e-5 |ref| (outputs are
convex combinations of O(1) values; observed errors are ~1e-6 at 2048 keys).

Batch invariance (attention.h's canonical algorithm): a position's output row is the same bits
whether its sequence runs in one chunk, token by token or in any chunking, alone or batched
with others, on 1, 2 or 3 threads, with or without a window; and every variant (AVX2, AVX-512)
gives the same bits as every other. The pure-torch twin is held to the same reference and is
batch-invariant on its own (it is not bitwise the kernel).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from astrai.model import ForwardBatch, ModelConfig
from astrai.model.batch import AttentionPlan
from astrai.model.kernels import (
    NativeUnavailable,
    kernels_for,
    native,
    native_unavailable_reason,
    supported_variants,
)
from astrai.model.kernels.attention import kv_write, kv_write_torch, paged_attention, paged_attention_torch
from astrai.model.kernels.build import check_machine
from astrai.model.layers import Attention
from torch_threads import torch_threads

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
    window: int = 0

    def args(self) -> tuple:
        """The operator's arguments up to the window (out follows)."""
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.query_start_loc,
                self.scale, self.window)


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
    window: int = 0,
) -> Case:
    """specs: (cached prefix, new query rows) per sequence. Pages are a shuffled, non-monotonic
    subset of a larger pool; every slot outside a context holds `fill`."""
    with torch_threads(1):
        return _make_case(specs, heads, kv_heads, head_dim, page_size, dtype, seed, q_gain, fill, window)


def _make_case(specs: list[tuple[int, int]], heads: int, kv_heads: int, head_dim: int, page_size: int,
               dtype: torch.dtype, seed: int, q_gain: float, fill: float, window: int) -> Case:
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
    starts = [0]
    for _, rows in specs:
        starts.append(starts[-1] + rows)
    q = q_gain * torch.randn(starts[-1], heads, head_dim, generator=generator)
    return Case(
        q=q,
        k_cache=k_cache,
        v_cache=v_cache,
        block_tables=block_tables,
        context_lens=torch.tensor([p + r for p, r in specs], dtype=torch.int32),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        scale=1.0 / math.sqrt(head_dim),
        window=window,
    )


def reference(case: Case) -> torch.Tensor:
    """float64 SDPA per sequence on K/V gathered slot by slot, explicit causal / window mask."""
    out = torch.empty(case.q.shape, dtype=torch.float64)
    page_size, kv_heads = case.k_cache.shape[1], case.k_cache.shape[2]
    group = case.q.shape[1] // kv_heads
    with torch_threads(1):
        for b in range(case.context_lens.shape[0]):
            context = int(case.context_lens[b])
            start, end = int(case.query_start_loc[b]), int(case.query_start_loc[b + 1])
            if end == start:
                continue
            keys_at = torch.arange(context)
            pages, offsets = case.block_tables[b].long()[keys_at // page_size], keys_at % page_size
            keys = case.k_cache[pages, offsets].double().repeat_interleave(group, dim=1)  # [L, H, D]
            values = case.v_cache[pages, offsets].double().repeat_interleave(group, dim=1)
            positions = torch.arange(context - (end - start), context)
            mask = keys_at[None, :] <= positions[:, None]
            if case.window > 0:
                mask &= keys_at[None, :] > positions[:, None] - case.window
            attended = F.scaled_dot_product_attention(
                case.q[start:end].double().transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1),
                attn_mask=mask, scale=case.scale,
            )
            out[start:end] = attended.transpose(0, 1)
    return out


def check(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=RTOL, atol=atol)


def run(kernels, case: Case, out: torch.Tensor | None = None) -> torch.Tensor:
    """The variant's native operator; out starts as NaN so an unwritten row shows."""
    out = torch.full(case.q.shape, float("nan")) if out is None else out
    kernels.ops.paged_attention(*case.args(), out)
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def all_variants() -> list:
    variants = supported_variants()
    if len(variants) < 2:
        pytest.skip(f"only {list(variants) or 'no'} kernel variant runs on this CPU: nothing to compare")
    try:
        return [kernels_for(v) for v in variants]
    except NativeUnavailable as exc:
        pytest.fail(f"a supported variant failed to build: {exc}")


# Mixed batch: decodes at contexts on, before and after page boundaries, a chunk after a cached
# prefix, a fresh prefill, a one-token sequence whose context is just itself, and a sequence
# with no query rows this step.
MIXED = [(0, 1), (14, 1), (15, 1), (16, 1), (40, 25), (0, 37), (130, 1), (7, 2), (31, 1), (20, 0), (150, 40)]
SHAPES = {  # (heads, kv_heads, head_dim, page_size)
    "gqa3-d64-p16": (9, 3, 64, 16),
    "mha-d128-p8": (4, 4, 128, 8),
    "gqa4-d128-p16": (8, 2, 128, 16),
    "gemma-d256-p16": (4, 1, 256, 16),
    "gqa2-d120-p16": (4, 2, 120, 16),  # 64 + 32 + 16 + 8: every column-chunk width of P V
}
KV_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
WINDOWS = [0, 37]  # 37: not a multiple of the 32-key tile


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_mixed_ragged_batch_matches_reference(variant_kernels, shape, kv_dtype):
    for window in WINDOWS:
        case = make_case(MIXED, *shape, kv_dtype, seed=sum(shape), window=window)
        check(run(variant_kernels, case), reference(case))


LONG = [(2047, 1), (1984, 64), (0, 300), (1500, 1)]  # a decode's keys split into pieces, a chunk after a long prefix


@pytest.fixture(scope="module")
def long_cases() -> dict:
    """The long batch per (KV dtype, window) with its float64 reference, computed once."""
    cases = {}
    for kv_dtype in KV_DTYPES:
        for window in (0, 700):  # 700: several pieces, not a multiple of 32 or 128
            case = make_case(LONG, 9, 3, 64, 16, kv_dtype, seed=5, window=window)
            cases[kv_dtype, window] = case, reference(case)
    return cases


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_long_contexts_on_any_thread_count(variant_kernels, long_cases, kv_dtype):
    """2048-token contexts: pieces of 128 keys merged in order, whichever thread ends last."""
    for window in (0, 700):
        case, expected = long_cases[kv_dtype, window]
        outputs = []
        for threads in (1, 2, 3):
            with torch_threads(threads):
                outputs.append(run(variant_kernels, case))
        check(outputs[0], expected)
        assert all(same_bits(out, outputs[0]) for out in outputs[1:]), f"window {window}: thread count changed bits"


# ---- invariance: chunking, batching, threads ----


@dataclass(frozen=True)
class Sequence:
    """A sequence whose K/V are all in the cache already; a step attends some of its positions."""

    index: int  # row of the block table
    length: int


def attend(kernels, world: Case, step: list[tuple[Sequence, int, int]]) -> dict[tuple[int, int], torch.Tensor]:
    """One call for the chunks (sequence, first position, rows) of a step: the outputs by (sequence, position)."""
    q_rows, tables, contexts, starts = [], [], [], [0]
    offsets = world.query_start_loc
    for seq, first, rows in step:
        base = int(offsets[seq.index])
        q_rows.append(world.q[base + first : base + first + rows])
        tables.append(world.block_tables[seq.index])
        contexts.append(first + rows)
        starts.append(starts[-1] + rows)
    case = replace(world, q=torch.cat(q_rows).contiguous(), block_tables=torch.stack(tables).contiguous(),
                   context_lens=torch.tensor(contexts, dtype=torch.int32),
                   query_start_loc=torch.tensor(starts, dtype=torch.int32))
    out = run(kernels, case)
    found = {}
    for (seq, first, rows), begin in zip(step, starts, strict=False):
        for i in range(rows):
            found[seq.index, first + i] = out[begin + i]
    return found


def chunked(seq: Sequence, sizes: list[int]) -> list[list[tuple[Sequence, int, int]]]:
    """One step per chunk size (the last chunk takes what is left)."""
    steps, done = [], 0
    for size in sizes:
        rows = min(size, seq.length - done)
        if rows <= 0:
            break
        steps.append([(seq, done, rows)])
        done += rows
    if done < seq.length:
        steps.append([(seq, done, seq.length - done)])
    return steps


def random_sizes(length: int, generator: torch.Generator, largest: int) -> list[int]:
    sizes, done = [], 0
    while done < length:
        sizes.append(int(torch.randint(1, largest + 1, (1,), generator=generator)))
        done += sizes[-1]
    return sizes


def interleaved(seqs: list[Sequence], generator: torch.Generator) -> list[list[tuple[Sequence, int, int]]]:
    """All sequences batched: each step takes the next random-sized chunk of every unfinished one,
    in a shuffled order."""
    plans = [[chunk for step in chunked(s, random_sizes(s.length, generator, 70)) for chunk in step] for s in seqs]
    steps = []
    while any(plans):
        step = [plan.pop(0) for plan in plans if plan]
        order = torch.randperm(len(step), generator=generator).tolist()
        steps.append([step[i] for i in order])
    return steps


INVARIANCE = {  # KV dtype, window, (heads, kv_heads, head_dim, page_size)
    "f16-nowindow-gqa3": (torch.float16, 0, (9, 3, 64, 16)),
    "f16-window50-gqa3": (torch.float16, 50, (9, 3, 64, 16)),
    "f32-window77-gemma": (torch.float32, 77, (4, 1, 256, 16)),
    "bf16-nowindow-gemma": (torch.bfloat16, 0, (4, 1, 256, 16)),
    "bf16-window200-mha": (torch.bfloat16, 200, (4, 4, 128, 8)),
}


def assert_invariant(path, kv_dtype: torch.dtype, window: int, shape: tuple, lengths: list[int],
                     only: tuple[str, ...] | None = None, threads: int | None = None) -> None:
    """Sequences of `lengths` (the first the one watched) run under many schedules on `path` (a
    variant, or the torch twin): every position's row keeps the bits of its sequence's one-chunk run.
    The "random" and "batched" schedules run on 1 and 2 threads, the others on `threads` (default:
    torch's)."""
    threads = threads or torch.get_num_threads()
    world = make_case([(0, n) for n in lengths], *shape, kv_dtype, seed=len(lengths) + window, window=window)
    seqs = [Sequence(i, n) for i, n in enumerate(lengths)]
    generator = torch.Generator().manual_seed(window)
    main = seqs[0]
    with torch_threads(threads):
        whole = attend(path, world, [(main, 0, main.length)])
        alone = {s.index: attend(path, world, [(s, 0, s.length)]) for s in seqs[1:]}
    expected = reference(replace(world, q=world.q[: main.length], block_tables=world.block_tables[:1],
                                 context_lens=world.context_lens[:1], query_start_loc=world.query_start_loc[:2]))
    check(torch.stack([whole[0, p] for p in range(main.length)]), expected)
    schedules = {
        "token by token": lambda: chunked(main, [1] * main.length),
        "100, 1, 199": lambda: chunked(main, [100, 1, 199]),
        "37 x 8, 4": lambda: chunked(main, [37] * 8),
        "all but 1, 1": lambda: chunked(main, [main.length - 1]),
        "random": lambda: chunked(main, random_sizes(main.length, generator, 40)),
        "batched": lambda: interleaved(seqs, generator),
        "batched, token by token": lambda: [[(s, p, 1) for s in seqs if p < s.length] for p in range(main.length)],
    }
    for name, make_steps in schedules.items():
        if only is not None and name not in only:
            continue
        steps = make_steps()
        for count in (1, 2) if name in ("random", "batched") else (threads,):
            with torch_threads(count):
                found = {}
                for step in steps:
                    found.update(attend(path, world, step))
            differ = [p for p in range(main.length) if not same_bits(found[0, p], whole[0, p])]
            assert not differ, f"{name}, {count} thread(s): positions {differ[:8]} differ from the one-chunk run"
            for seq in seqs[1:] if name.startswith("batched") else ():  # the others, against their own one chunk
                differ = [p for p in range(seq.length) if not same_bits(found[seq.index, p], alone[seq.index][seq.index, p])]
                assert not differ, f"{name}, {count} thread(s): sequence {seq.index} positions {differ[:8]} differ"


@pytest.mark.parametrize("kv_dtype, window, shape", INVARIANCE.values(), ids=INVARIANCE.keys())
def test_a_position_gets_the_same_bits_however_its_sequence_is_chunked_and_batched(variant_kernels, kv_dtype, window,
                                                                                   shape):
    assert_invariant(variant_kernels, kv_dtype, window, shape, [300, 170, 41])


def _twin_operator(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, window, out) -> None:
    paged_attention_torch(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, out, window)


# The pure-torch path (where the native kernels cannot run) behind a variant's operator signature.
TORCH_TWIN = SimpleNamespace(variant="torch", ops=SimpleNamespace(paged_attention=_twin_operator))


@pytest.mark.parametrize("kv_dtype, window, shape", [INVARIANCE["f16-window50-gqa3"], INVARIANCE["bf16-nowindow-gemma"]],
                         ids=["f16-window50-gqa3", "bf16-nowindow-gemma"])
def test_the_torch_twin_is_batch_invariant_on_its_own(kv_dtype, window, shape):
    """Shorter sequences, fewer schedules, mostly one thread: the twin costs ~20 torch ops per tile."""
    assert_invariant(TORCH_TWIN, kv_dtype, window, shape, [140, 70, 20],
                     only=("token by token", "all but 1, 1", "batched"), threads=1)


# ---- the window's edges ----


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_window_edges(variant_kernels, kv_dtype):
    specs = [(0, 1), (5, 1), (63, 1), (127, 2), (200, 57), (0, 90)]
    base = make_case(specs, 9, 3, 64, 16, kv_dtype, seed=21)
    unwindowed = run(variant_kernels, base)
    # window 1: each query sees only its own key, so its output is its own value row exactly
    own = run(variant_kernels, replace(base, window=1))
    page_size = base.k_cache.shape[1]
    for b, (prefix, rows) in enumerate(specs):
        for i in range(rows):
            position = prefix + i
            slot = base.block_tables[b, position // page_size], position % page_size
            value = base.v_cache[slot].float().repeat_interleave(3, dim=0)
            row = int(base.query_start_loc[b]) + i
            assert same_bits(own[row], value), f"window 1, sequence {b}, position {position}"
    # a window reaching past every context changes nothing, bit for bit
    for window in (258, 10_000, 2**31 - 1):
        assert same_bits(run(variant_kernels, replace(base, window=window)), unwindowed), f"window {window}"
    # windows off the tile and piece grid, and exactly a context's length
    for window in (2, 31, 33, 64, 127, 129, 201):
        case = replace(base, window=window)
        check(run(variant_kernels, case), reference(case))


def test_every_variant_gives_the_same_bits(long_cases):
    variants = all_variants()
    cases = [make_case(MIXED, *shape, kv_dtype, seed=3, window=window)
             for shape in SHAPES.values() for kv_dtype in KV_DTYPES for window in WINDOWS]
    cases += [case for case, _ in long_cases.values()]
    for case in cases:
        outputs = [run(kernels, case) for kernels in variants]
        for kernels, out in zip(variants[1:], outputs[1:], strict=True):
            assert same_bits(out, outputs[0]), (f"{kernels.variant} vs {variants[0].variant}: "
                                                f"{case.k_cache.dtype}, {list(case.q.shape)}, window {case.window}")


# ---- details ----


def test_single_token_is_its_own_context(variant_kernels):
    case = make_case([(0, 1)], 9, 3, 64, 16, torch.float32)
    out = run(variant_kernels, case)
    # one key: softmax weight 1, the output is that token's value, exactly
    v = case.v_cache[int(case.block_tables[0, 0]), 0].repeat_interleave(3, dim=0)
    assert same_bits(out[0], v)


def test_peaky_softmax(variant_kernels):
    """Large scores (q x 8) exercise the running maximum and rescaling across tiles."""
    for window in (0, 45):
        case = make_case([(300, 1), (100, 40), (0, 90)], 9, 3, 64, 8, torch.float16, seed=2, q_gain=8.0, window=window)
        # scores reach ~30 here, and a float32 score carries ~2e-6 absolute rounding, which the
        # softmax passes on: ~1e-5 off the float64 reference
        check(run(variant_kernels, case), reference(case), atol=2e-5)


def test_strided_q_and_out_views(variant_kernels):
    """q sliced out of a fused qkv output, out a view into a wider buffer: no copies needed."""
    heads, kv_heads, dim = 9, 3, 64
    case = make_case(MIXED, heads, kv_heads, dim, 16, torch.float16, seed=9, window=40)
    tokens = case.q.shape[0]
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim)
    q = qkv[:, : heads * dim].view(tokens, heads, dim)
    q.copy_(case.q)
    wide = torch.full((tokens, heads * dim + 16), -7.0)
    out = wide[:, 8 : 8 + heads * dim].view(tokens, heads, dim)
    assert not q.is_contiguous() and not out.is_contiguous()
    contiguous = run(variant_kernels, case)
    case.q = q
    run(variant_kernels, case, out)
    assert same_bits(out, contiguous)
    check(out, reference(case))
    assert bool((wide[:, :8] == -7.0).all()) and bool((wide[:, -8:] == -7.0).all())


def test_the_torch_twin_matches_the_reference_and_the_kernel(native_kernels):
    """The pure-torch path (used where the native kernels cannot run): float64 reference, the
    kernel to float32 rounding (it is not bitwise the kernel: no fused multiply-adds), windows."""
    with torch_threads(1):  # ~20 small torch ops per tile: one thread is much cheaper on a busy machine
        for kv_dtype in KV_DTYPES:
            for window in WINDOWS:
                case = make_case(MIXED + [(300, 20), (700, 1)], 9, 3, 64, 16, kv_dtype, seed=17, window=window)
                twin = run(TORCH_TWIN, case)
                check(twin, reference(case))
                torch.testing.assert_close(twin, run(native_kernels, case), rtol=RTOL, atol=2 * ATOL)  # both ~ATOL off
        own = run(TORCH_TWIN, replace(case, window=1))  # each query sees only its own key: its value row, exactly
        rows = torch.arange(case.q.shape[0])
        sequence = torch.searchsorted(case.query_start_loc, rows, right=True) - 1
        positions = case.context_lens[sequence] - (case.query_start_loc[sequence + 1] - rows)
        pages = case.block_tables[sequence, positions // 16].long()
        assert same_bits(own, case.v_cache[pages, positions % 16].float().repeat_interleave(3, dim=1))
        assert same_bits(run(TORCH_TWIN, replace(case, window=10_000)), run(TORCH_TWIN, replace(case, window=0)))


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
    torch.testing.assert_close(run(native_kernels, case), expected, rtol=RTOL, atol=ATOL)


def test_dispatcher_uses_native_for_float32_and_torch_otherwise(native_kernels):
    case = make_case(MIXED, 9, 3, 64, 16, torch.bfloat16, seed=11)
    expected = reference(case)
    if native() is not None:
        assert same_bits(paged_attention(*case.args()[:7]), run(native_kernels, case))
        assert same_bits(paged_attention(*case.args()[:7], window=30), run(native_kernels, replace(case, window=30)))
    bf16 = paged_attention(case.q.bfloat16(), *case.args()[1:7])  # not the kernel's dtype: the torch path
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.double(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kv_dtype", KV_DTYPES, ids=str)
def test_kv_write_converts_and_skips(variant_kernels, kv_dtype):
    kv_heads, dim, tokens = 3, 64, 11
    qkv = torch.randn(tokens, (9 + 2 * kv_heads) * dim) * 3
    k = qkv[:, 9 * dim : (9 + kv_heads) * dim].view(tokens, kv_heads, dim)
    v = qkv[:, (9 + kv_heads) * dim :].view(tokens, kv_heads, dim)
    slots = torch.tensor([5, -1, 40, 41, -1, 0, 77, 63, 12, -1, 3])
    native_k = torch.full((10, 8, kv_heads, dim), 9.0, dtype=kv_dtype)
    native_v = native_k.clone()
    torch_k, torch_v = native_k.clone(), native_v.clone()
    variant_kernels.ops.kv_write(k, v, native_k, native_v, slots)
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


def test_kv_write_then_attend_round_trip(variant_kernels):
    """Write a prefill's K/V with kv_write, then attend over them: the layer's two steps."""
    case = make_case([(24, 1), (0, 20)], 9, 3, 64, 8, torch.float16, seed=13, window=9)
    page_size = case.k_cache.shape[1]
    fresh = torch.randn(20, 3, 64), torch.randn(20, 3, 64)
    table = case.block_tables[1]
    slots = torch.tensor([int(table[j // page_size]) * page_size + j % page_size for j in range(20)])
    variant_kernels.ops.kv_write(fresh[0], fresh[1], case.k_cache, case.v_cache, slots)
    check(run(variant_kernels, case), reference(case))


ERRORS = {
    "page outside the cache": (lambda c: c.block_tables.__setitem__((0, 0), 10_000), "outside the cache"),
    "context shorter than queries": (lambda c: c.context_lens.__setitem__(1, 3), "context"),
    "block table too narrow": (lambda c: setattr(c, "block_tables", c.block_tables[:, :1].contiguous()), "pages"),
    "wrong q dtype": (lambda c: setattr(c, "q", c.q.double()), "float32"),
    "heads not a multiple": (lambda c: setattr(c, "q", c.q[:, :8].contiguous()), "multiple"),
    "query_start_loc not ending at T": (lambda c: c.query_start_loc.__setitem__(-1, 1), "query_start_loc"),
    "negative window": (lambda c: setattr(c, "window", -1), r"window must be >= 0 \(0: no sliding window\), got -1"),
    "window past int32": (lambda c: setattr(c, "window", 2**31), "window must be >= 0"),
    "cache dtypes differ": (lambda c: setattr(c, "v_cache", c.v_cache.half()), "dtypes differ"),
    "int64 context_lens": (lambda c: setattr(c, "context_lens", c.context_lens.long()), "context_lens must be Int"),
}


@pytest.mark.parametrize("mutate, message", ERRORS.values(), ids=ERRORS.keys())
def test_bad_inputs_raise_clear_errors(variant_kernels, mutate, message):
    case = make_case([(30, 1), (0, 12)], 9, 3, 64, 16, torch.float32)
    mutate(case)
    with pytest.raises(RuntimeError, match=message):
        variant_kernels.ops.paged_attention(*case.args(), torch.empty(case.q.shape))


def test_native_kernels_load_wherever_they_can_build():
    """Where a compiler and AVX2 exist the kernels must build: a silent torch fallback there is a bug."""
    try:
        check_machine()
    except NativeUnavailable as exc:
        pytest.skip(f"no native kernels on this machine: {exc}")
    if os.environ.get("ASTRAI_KERNELS", "").lower() == "torch":
        pytest.skip("ASTRAI_KERNELS=torch forces the torch path")
    assert native() is not None, native_unavailable_reason()
