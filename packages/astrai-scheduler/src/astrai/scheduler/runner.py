"""Turns a step plan into one ragged ForwardBatch, runs the model, samples the next tokens."""

from __future__ import annotations

from typing import Any

import torch
from astrai.model import ForwardBatch

from .sampler import Sampler, SampleResult
from .scheduler import Chunk


class ModelRunner:
    """Owns the model call for a step: batch building from flat lists, forward, sampling."""

    def __init__(self, model: Any, kv: Any, sampler: Sampler) -> None:
        self.model = model
        self.kv = kv
        self.sampler = sampler
        self.device = model.device

    def build_batch(self, chunks: list[Chunk]) -> ForwardBatch:
        """All chunks' new tokens concatenated; tensors built once from flat Python lists."""
        kv = self.kv
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        tables: list[list[int]] = []
        context_lens: list[int] = []
        starts = [0]
        logits_rows: list[int] = []
        for c in chunks:
            rid = c.request.request_id
            token_ids += c.request.token_slice(c.start, c.end)
            positions += range(c.start, c.end)
            slots += kv.slot_mapping(rid, c.start, c.end)
            tables.append(list(kv.block_table(rid)))
            context_lens.append(c.end)
            starts.append(len(token_ids))
            if c.sample:
                logits_rows.append(len(token_ids) - 1)
        width = max(len(t) for t in tables)
        for t in tables:
            if len(t) < width:
                t += [0] * (width - len(t))
        dev = self.device
        return ForwardBatch(
            token_ids=torch.tensor(token_ids, dtype=torch.long, device=dev),
            positions=torch.tensor(positions, dtype=torch.long, device=dev),
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=dev),
            query_start_loc=torch.tensor(starts, dtype=torch.int32, device=dev),
            logits_indices=torch.tensor(logits_rows, dtype=torch.long, device=dev),
        )

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        return self.model(batch, self.kv.kv_caches, self.kv.page_size)

    def sample(self, logits: torch.Tensor, chunks: list[Chunk]) -> SampleResult:
        rows = [c.request for c in chunks if c.sample]
        return self.sampler.sample(logits, rows)
