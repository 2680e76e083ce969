"""Paged attention over the KV cache, and the cache write: native kernel or pure-torch twin.

`paged_attention` runs every sequence of a ragged batch (single decode tokens, chunks after a
cached prefix, fresh prefills) in one call, reading K/V straight from the pages named by the
block tables. The native kernel (csrc/attention.cpp) handles float32 queries on the CPU; the
torch twin handles everything else and is the reference the tests hold the kernel to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    sequence's pages in order.
    """
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if _native_fits(q, k_cache, out):
        ops().paged_attention(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, window, out)
        return out
    return paged_attention_torch(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, out)


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


def paged_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The torch path: decode rows in one padded SDPA, multi-token chunks in another."""
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    q_lens = (query_start_loc[1:] - query_start_loc[:-1]).long()
    for group in (q_lens == 1, q_lens > 1):
        seqs = group.nonzero().squeeze(1)
        if seqs.numel():
            _padded_attention(q, k_cache, v_cache, block_tables, context_lens, query_start_loc, q_lens, seqs, scale, out)
    return out


def _padded_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    q_lens: torch.Tensor,
    seqs: torch.Tensor,
    scale: float,
    out: torch.Tensor,
) -> None:
    """Sequences `seqs` padded to their longest query run and context, masked, in one SDPA."""
    device = q.device
    page_size = k_cache.shape[1]
    lens, starts, contexts = q_lens[seqs], query_start_loc[seqs].long(), context_lens[seqs].long()
    q_max, length = int(lens.max()), int(contexts.max())
    steps = torch.arange(q_max, device=device)
    real = steps[None, :] < lens[:, None]  # [n, q_max]: which padded query rows exist
    rows = torch.where(real, starts[:, None] + steps[None, :], starts[:, None])
    keys = torch.arange(length, device=device)
    pages = block_tables[seqs][:, keys // page_size].long()
    slots = pages * page_size + keys % page_size  # [n, length]
    # Past its context a row reads its first key again (then masks it): stale or never-written
    # slots may hold anything, and NaN * 0 would still poison the weighted sum.
    slots = torch.where(keys[None, :] < contexts[:, None], slots, slots[:, :1])
    kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k = k_cache.view(-1, kv_heads, head_dim)[slots].to(q.dtype).transpose(1, 2)  # [n, kvh, length, D]
    v = v_cache.view(-1, kv_heads, head_dim)[slots].to(q.dtype).transpose(1, 2)
    positions = contexts[:, None] - lens[:, None] + steps[None, :]  # [n, q_max]: each query's position
    mask = keys[None, None, :] <= positions[:, :, None]  # causal, and hides keys past the context
    attended = F.scaled_dot_product_attention(
        q[rows].transpose(1, 2), k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=True
    )  # [n, H, q_max, D]
    out[rows[real]] = attended.transpose(1, 2)[real]


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
