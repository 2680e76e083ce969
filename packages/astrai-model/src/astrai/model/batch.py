"""The ragged batch one forward step sees, and the attention plan derived from it.

`ForwardBatch` is the seam with the scheduler (see INTERFACES.md). `AttentionPlan` is built
once per forward (per attention kind: full, or one sliding window) and reused by every layer: which rows are single-token decodes
(attended together over a padded gather of their pages), which are prefill chunks (attended
per sequence, causally, after their cached prefix), and where new K/V go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class ForwardBatch:
    """Flat ragged batch: the new tokens of B sequences concatenated into T rows."""

    token_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long
    slot_mapping: torch.Tensor  # [T] long, page * page_size + offset, -1 = do not write
    block_tables: torch.Tensor  # [B, max_pages] int32, padded with 0
    context_lens: torch.Tensor  # [B] int32, cached tokens after this step's writes
    query_start_loc: torch.Tensor  # [B+1] int32
    logits_indices: torch.Tensor  # [R] long

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])

    @classmethod
    def build(
        cls,
        token_ids: Sequence[Sequence[int]],
        start_positions: Sequence[int],
        block_tables: Sequence[Sequence[int]] | None,
        page_size: int,
        *,
        slot_mappings: Sequence[Sequence[int]] | None = None,
        logits_indices: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> ForwardBatch:
        """Build from per-sequence lists, checked (callers and tests; the engine flattens its
        own plan and calls `from_flat`).

        `token_ids[b]` are sequence b's new tokens, at positions `start_positions[b]...`;
        `block_tables[b]` its pages (None: no cache, every sequence must start at 0).
        Slots default to what the block table implies; logits default to each sequence's
        last new token.
        """
        if len(start_positions) != len(token_ids):
            raise ValueError("token_ids and start_positions must have one entry per sequence")
        if block_tables is not None and len(block_tables) != len(token_ids):
            raise ValueError("block_tables must have one entry per sequence")
        flat_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        starts = [0]
        for b, (ids, start) in enumerate(zip(token_ids, start_positions, strict=True)):
            if not ids:
                raise ValueError(f"sequence {b} has no new tokens")
            flat_ids.extend(ids)
            positions.extend(range(start, start + len(ids)))
            if slot_mappings is not None:
                if len(slot_mappings[b]) != len(ids):
                    raise ValueError(f"sequence {b}: slot mapping length != token count")
                slots.extend(slot_mappings[b])
            elif block_tables is None:
                if start != 0:
                    raise ValueError("without block tables every sequence must start at position 0")
                slots.extend([-1] * len(ids))
            else:
                table = block_tables[b]
                for p in range(start, start + len(ids)):
                    if p // page_size >= len(table):
                        raise ValueError(f"sequence {b}: position {p} lies beyond its {len(table)} pages")
                    slots.append(table[p // page_size] * page_size + p % page_size)
            starts.append(len(flat_ids))
        tables = [list(t) for t in block_tables] if block_tables is not None else [[] for _ in token_ids]
        if logits_indices is None:
            logits_indices = [s - 1 for s in starts[1:]]
        context = [start + len(ids) for ids, start in zip(token_ids, start_positions, strict=True)]
        return cls.from_flat(flat_ids, positions, slots, tables, context, starts, list(logits_indices), device=device)

    @classmethod
    def from_flat(
        cls,
        token_ids: list[int],
        positions: list[int],
        slot_mapping: list[int],
        block_tables: list[list[int]],
        context_lens: list[int],
        query_start_loc: list[int],
        logits_indices: list[int],
        *,
        device: torch.device | str = "cpu",
    ) -> ForwardBatch:
        """The tensor builder: each field made once from flat lists, block tables padded with 0.

        The engine calls it every step (after flattening its plan); `build` checks per-sequence
        lists and calls it too. Short block tables are padded in place: pass lists you own.
        """
        width = max(1, max(map(len, block_tables), default=0))
        for table in block_tables:
            if len(table) < width:
                table += [0] * (width - len(table))

        def tensor(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        return cls(
            token_ids=tensor(token_ids, torch.long),
            positions=tensor(positions, torch.long),
            slot_mapping=tensor(slot_mapping, torch.long),
            block_tables=tensor(block_tables, torch.int32),
            context_lens=tensor(context_lens, torch.int32),
            query_start_loc=tensor(query_start_loc, torch.int32),
            logits_indices=tensor(logits_indices, torch.long),
        )


@dataclass
class PrefillSeq:
    """One multi-token chunk: rows [start, end) over `context_len` cached tokens."""

    start: int
    end: int
    context_len: int
    gather: torch.Tensor | None  # [keys] slots of the keys it sees; None: its own fresh K/V
    mask: torch.Tensor | None  # [q, keys] bool, True = attend (None with gather None: plain causal)


@dataclass
class AttentionPlan:
    """Per-forward attention bookkeeping shared by all layers of one attention kind.

    `window` None: causal over the whole context. A sliding window W: the query at position p
    sees keys p - W < k <= p only (llama.cpp's and transformers' convention), so decode rows
    gather just their last W keys and prefill chunks those from W - 1 before their first query.
    """

    write_slots: torch.Tensor | None  # slots to write new K/V to (None: no cache)
    write_rows: torch.Tensor | None  # rows of the new K/V to write (None: all rows)
    decode_rows: torch.Tensor | None  # [Bd] rows that are single decode tokens
    decode_all_rows: bool  # decode_rows == arange(T): skip the row gather
    decode_gather: torch.Tensor | None  # [Bd, Lmax] slots of each decode sequence's keys
    decode_mask: torch.Tensor | None  # [Bd, 1, 1, Lmax] bool, True = attend (None: no padding)
    prefills: list[PrefillSeq]
    window: int | None = None

    @classmethod
    def build(cls, batch: ForwardBatch, page_size: int, has_cache: bool, window: int | None = None) -> AttentionPlan:
        if window is not None and window < 1:
            raise ValueError(f"sliding window must be >= 1, got {window}")
        device = batch.token_ids.device
        starts = batch.query_start_loc.tolist()
        contexts = batch.context_lens.tolist()
        write_slots = write_rows = None
        if has_cache:
            valid = batch.slot_mapping >= 0
            if bool(valid.all()):
                write_slots = batch.slot_mapping
            elif bool(valid.any()):
                write_rows = valid.nonzero().squeeze(1)
                write_slots = batch.slot_mapping[write_rows]

        decode_seqs: list[int] = []
        prefills: list[PrefillSeq] = []
        for b, context in enumerate(contexts):
            start, end = starts[b], starts[b + 1]
            q_len = end - start
            if q_len <= 0:
                raise ValueError(f"sequence {b} has no new tokens (query_start_loc {starts})")
            if context < q_len:
                raise ValueError(f"sequence {b}: context length {context} < its {q_len} new tokens")
            if context == q_len:
                mask = None
                if window is not None and q_len > window:
                    mask = _causal_mask(0, q_len, 0, q_len, window, device)
                prefills.append(PrefillSeq(start, end, context, None, mask))
                continue
            if not has_cache:
                raise ValueError(f"sequence {b} continues a cached prefix but no KV cache was given")
            if q_len == 1:
                decode_seqs.append(b)
                continue
            first_key = 0 if window is None else max(0, context - q_len - window + 1)
            if first_key == 0:
                gather = _context_slots(batch.block_tables[b : b + 1], context, page_size)[0]
            else:
                positions = torch.arange(first_key, context, device=device)[None]
                gather = _slots_at(batch.block_tables[b : b + 1], positions, page_size)[0]
            mask = _causal_mask(context - q_len, context, first_key, context, window, device)
            prefills.append(PrefillSeq(start, end, context, gather, mask))

        decode_rows = decode_gather = decode_mask = None
        decode_all_rows = False
        if decode_seqs:
            rows = [starts[b] for b in decode_seqs]
            decode_all_rows = len(rows) == len(starts) - 1 and rows[-1] == len(rows) - 1 and starts[-1] == len(rows)
            seq_index = torch.tensor(decode_seqs, device=device)
            decode_rows = torch.tensor(rows, device=device)
            seen = [contexts[b] if window is None else min(contexts[b], window) for b in decode_seqs]
            longest = max(seen)
            if window is None or max(contexts[b] for b in decode_seqs) <= window:
                decode_gather = _context_slots(batch.block_tables[seq_index], longest, page_size)
            else:  # each row's keys start `seen` before its end; short rows pad past their end (masked)
                ends = torch.tensor([contexts[b] for b in decode_seqs], device=device)
                first = ends - torch.tensor(seen, device=device)
                positions = torch.minimum(first[:, None] + torch.arange(longest, device=device), ends[:, None] - 1)
                decode_gather = _slots_at(batch.block_tables[seq_index], positions, page_size)
            if min(seen) < longest:  # equal lengths need no padding mask
                lens = torch.tensor(seen, device=device)
                decode_mask = (torch.arange(longest, device=device)[None, :] < lens[:, None])[:, None, None, :]
        return cls(write_slots, write_rows, decode_rows, decode_all_rows, decode_gather, decode_mask, prefills,
                   window)


def _causal_mask(
    first_query: int, end_query: int, first_key: int, end_key: int, window: int | None, device: torch.device
) -> torch.Tensor:
    """[queries, keys] bool: key k visible to query q iff k <= q (and q - k < window)."""
    queries = torch.arange(first_query, end_query, device=device)[:, None]
    keys = torch.arange(first_key, end_key, device=device)[None, :]
    visible = keys <= queries
    if window is not None:
        visible &= queries - keys < window
    return visible


def _slots_at(block_tables: torch.Tensor, positions: torch.Tensor, page_size: int) -> torch.Tensor:
    """Slots of token `positions` [B, L] in each row's pages -> [B, L] long."""
    pages = block_tables.long().gather(1, torch.div(positions, page_size, rounding_mode="floor"))
    return pages * page_size + positions % page_size


def _context_slots(block_tables: torch.Tensor, length: int, page_size: int) -> torch.Tensor:
    """Slots of positions [0, length) for each row of `block_tables` -> [B, length] long."""
    num_pages = -(-length // page_size)
    if num_pages > block_tables.shape[1]:
        raise ValueError(f"context of {length} tokens needs {num_pages} pages; block table has {block_tables.shape[1]}")
    pages = block_tables[:, :num_pages].long()
    offsets = torch.arange(page_size, device=block_tables.device)
    return (pages[:, :, None] * page_size + offsets).reshape(block_tables.shape[0], -1)[:, :length].contiguous()
