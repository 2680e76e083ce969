"""Paged attention over the KV cache, and the cache write: native kernel or pure-torch twin.

`paged_attention` runs every sequence of a ragged batch (single decode tokens, chunks after a
cached prefix, fresh prefills) in one call, reading K/V straight from the pages named by the
block tables. The native kernel (csrc/attention.cpp) handles float32 queries on the CPU; the
torch twin handles everything else and is the reference the tests hold the kernel to.
"""

from __future__ import annotations

import torch

from . import native, ops

KV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    window: int = 0,
) -> torch.Tensor:
    """Causal GQA attention of q [T, H, D] over paged K/V; returns (and fills) out [T, H, D].

    Sequence b's queries are rows `query_start_loc[b]:query_start_loc[b+1]`, the last positions
    of its `context_lens[b]` cached tokens (their own K/V already written). Caches are
    [num_pages, page_size, kv_heads, D]; `block_tables` [B, max_pages] int32 lists each
    sequence's pages in order. `window` > 0: a query at position p sees keys p - window + 1 .. p.
    Both paths are batch-invariant (csrc/attention.h; `paged_attention_torch`).
    """
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if _native_fits(q, k_cache, out):
        ops().paged_attention(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, window, out)
        return out
    return paged_attention_torch(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, out, window)


def kv_write(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write rows k, v [T, kv_heads, D] to cache slots `slot_mapping` [T] (-1: skip), in the cache's dtype."""
    if _native_fits(k, k_cache, v) and v.stride(-1) == 1 and slot_mapping.dtype == torch.long:
        ops().kv_write(k, v, k_cache, v_cache, slot_mapping.contiguous())
        return
    kv_write_torch(k, v, k_cache, v_cache, slot_mapping)


def _native_fits(rows: torch.Tensor, cache: torch.Tensor, other: torch.Tensor) -> bool:
    return (
        rows.device.type == "cpu"
        and rows.dtype == torch.float32
        and other.dtype == torch.float32
        and cache.dtype in KV_DTYPES
        and cache.is_contiguous()
        and rows.shape[-1] % 8 == 0
        and rows.stride(-1) == 1
        and other.stride(-1) == 1
        and native() is not None
    )


# ---- the pure-torch twins ----

LOG2E = 1.4426950408889634
TILE = 32  # keys per tile, at absolute multiples of 32
ROW_BLOCK = 8  # query vectors per head padded to a multiple of this


def paged_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    window: int = 0,
) -> torch.Tensor:
    """The torch path, batch-invariant on its own: a query vector's result is the same whatever
    else is in the call and however its sequence was chunked.

    Every query vector runs the same steps: keys in tiles of 32 at absolute positions; per tile
    the scores and P V come from matmuls of one fixed shape per head ([vectors padded to a
    multiple of 8, D] x [D, 32] and [.., 32] x [32, D]; a row's result then does not depend on
    the other rows in the call), the visible keys' weights from an online softmax in base 2
    whose tile sums use a fixed pairwise tree. Sequences with the same padded vector count are
    batched together. (Not bitwise equal to the native kernel, which fuses its multiply-adds.)
    """
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if q.shape[0] == 0:
        return out
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    starts = query_start_loc.tolist()
    q_lens = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    padded = [-(-n * group // ROW_BLOCK) * ROW_BLOCK for n in q_lens]
    for size in sorted({p for p, n in zip(padded, q_lens, strict=True) if n}):
        seqs = [b for b, (p, n) in enumerate(zip(padded, q_lens, strict=True)) if n and p == size]
        _attend_group(q, k_cache, v_cache, block_tables, context_lens, starts, seqs, size, scale, window, out)
    return out


_EXP2_POLY = (0.000153458124, 0.00133999309, 0.00961848907, 0.0555032864, 0.240226462, 0.693147182, 1.0)


def _exp2(x: torch.Tensor) -> torch.Tensor:
    """2^x for x <= 0 (-inf and anything below -126 give 0) from IEEE-exact elementwise steps only:
    torch.exp2's vectorised and scalar paths may differ in the last bit, which would tie a value
    to where it sits in memory. The native kernel's polynomial (simd.h), without fused multiply-adds."""
    tiny = x < -126.0
    x = x.clamp(min=-126.0)
    n = torch.round(x)
    r = x - n  # exact, in [-0.5, 0.5]
    p = torch.full_like(r, _EXP2_POLY[0])
    for coefficient in _EXP2_POLY[1:]:
        p = p * r + coefficient
    scale = ((n.to(torch.int32) + 127) << 23).view(torch.float32)  # 2^n, exact
    return torch.where(tiny, 0.0, p * scale)


def _tile_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension (32) by a fixed pairwise tree: elementwise adds only."""
    while x.shape[-1] > 1:
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _attend_group(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    starts: list[int],
    seqs: list[int],
    size: int,
    scale: float,
    window: int,
    out: torch.Tensor,
) -> None:
    """Sequences `seqs`, each with query vectors padded to `size` per KV head, in one batch."""
    device, dtype = q.device, q.dtype
    heads, dim = q.shape[1], q.shape[2]
    page_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    n = len(seqs)
    index = torch.tensor(seqs, device=device)
    contexts = context_lens.long()[index]  # [n]
    lens = torch.tensor([starts[b + 1] - starts[b] for b in seqs], device=device)
    first = contexts - lens
    rows_per_head = int(lens.max())  # rows_per_head * group <= size for every sequence of the group
    step = torch.arange(rows_per_head, device=device)
    real_row = step[None, :] < lens[:, None]  # [n, rows]
    row_ids = torch.where(real_row, torch.tensor([starts[b] for b in seqs], device=device)[:, None] + step, 0)
    positions = first[:, None] + step  # [n, rows]
    lowest = (positions - window + 1).clamp(min=0) if window > 0 else torch.zeros_like(positions)
    # query vectors [n, kv_heads, size, D]: rows x the group's heads, scaled into base 2
    c = torch.tensor(scale, dtype=torch.float32) * torch.tensor(LOG2E, dtype=torch.float32)
    qv = (q[row_ids].float() * c).view(n, rows_per_head, kv_heads, group, dim).permute(0, 2, 1, 3, 4)
    qv = qv.reshape(n, kv_heads, rows_per_head * group, dim)
    vec_pos = positions.repeat_interleave(group, dim=1)  # [n, rows * group]
    vec_low = lowest.repeat_interleave(group, dim=1)
    vec_real = real_row.repeat_interleave(group, dim=1)
    if qv.shape[2] < size:
        pad = size - qv.shape[2]
        qv = torch.nn.functional.pad(qv, (0, 0, 0, pad))
        vec_pos = torch.nn.functional.pad(vec_pos, (0, pad), value=-1)
        vec_low = torch.nn.functional.pad(vec_low, (0, pad))
        vec_real = torch.nn.functional.pad(vec_real, (0, pad))
    qv = qv.reshape(n * kv_heads, size, dim).contiguous()
    top = torch.full((n, kv_heads, size), float("-inf"), device=device)
    total = torch.zeros((n, kv_heads, size), device=device)
    acc = torch.zeros((n, kv_heads, size, dim), device=device)
    key_first = int(lowest[:, 0].min()) // TILE * TILE
    key_last = int(contexts.max())
    flat_k = k_cache.view(-1, kv_heads, dim)
    flat_v = v_cache.view(-1, kv_heads, dim)
    offsets = torch.arange(TILE, device=device)
    for tile in range(key_first, key_last, TILE):
        keys = tile + offsets  # [32]
        present = keys[None, :] < contexts[:, None]  # [n, 32]
        pages = block_tables[index][:, (keys // page_size).clamp(max=block_tables.shape[1] - 1)].long()
        slots = torch.where(present, pages * page_size + keys % page_size, 0)
        k_tile = torch.where(present[..., None, None], flat_k[slots].float(), 0.0)  # [n, 32, kvh, D]
        v_tile = torch.where(present[..., None, None], flat_v[slots].float(), 0.0)
        k_t = k_tile.permute(0, 2, 3, 1).reshape(n * kv_heads, dim, TILE)
        v_t = v_tile.permute(0, 2, 1, 3).reshape(n * kv_heads, TILE, dim)
        scores = torch.bmm(qv, k_t).view(n, kv_heads, size, TILE)
        visible = (keys[None, None, :] >= vec_low[:, :, None]) & (keys[None, None, :] <= vec_pos[:, :, None])
        visible = (visible & vec_real[:, :, None])[:, None]  # [n, 1, size, 32]
        scores = torch.where(visible, scores, float("-inf"))
        tile_top = scores.amax(dim=-1)
        seen = tile_top > float("-inf")
        new_top = torch.maximum(top, tile_top)
        safe = torch.where(seen, new_top, 0.0)
        weights = _exp2(scores - safe[..., None])
        alpha = torch.where(seen, _exp2(top - safe), 1.0)
        total = total * alpha + _tile_sum(weights)
        mixed = torch.bmm(weights.reshape(n * kv_heads, size, TILE), v_t).view(n, kv_heads, size, dim)
        acc = torch.where(seen[..., None], acc * alpha[..., None] + mixed, acc)
        top = torch.where(seen, new_top, top)
    result = acc * (1.0 / total.clamp_min(torch.finfo(torch.float32).tiny))[..., None]
    result = result[:, :, : rows_per_head * group].reshape(n, kv_heads, rows_per_head, group, dim)
    result = result.permute(0, 2, 1, 3, 4).reshape(n, rows_per_head, heads, dim)
    out[row_ids[real_row]] = result[real_row].to(dtype)


def kv_write_torch(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """The torch path of `kv_write`: index_copy_ of the rows whose slot is not -1."""
    slots = slot_mapping.long()
    valid = slots >= 0
    if not bool(valid.all()):
        rows = valid.nonzero().squeeze(1)
        k, v, slots = k[rows], v[rows], slots[rows]
    if slots.numel() == 0:
        return
    kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, v.to(v_cache.dtype))


__all__ = ["kv_write", "kv_write_torch", "paged_attention", "paged_attention_torch"]
