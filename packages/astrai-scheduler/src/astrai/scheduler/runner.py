"""Turns a step plan into one ragged ForwardBatch, runs the model, samples the next tokens."""

from __future__ import annotations

import torch
from astrai.cache import KVCacheManager
from astrai.model import ForwardBatch, ForwardModel

from .sampler import Sampler, SampleResult
from .scheduler import Chunk


class ModelRunner:
    """Owns the model call for a step: batch building, forward, sampling."""

    def __init__(self, model: ForwardModel, kv: KVCacheManager, sampler: Sampler) -> None:
        self.model = model
        self.kv = kv
        self.sampler = sampler
        self.device = model.device

    def build_batch(self, chunks: list[Chunk]) -> ForwardBatch:
        """All chunks' new tokens in one ragged batch; logits only for chunks that sample."""
        kv = self.kv
        token_ids: list[list[int]] = []
        starts: list[int] = []
        tables: list[list[int]] = []
        slots: list[list[int]] = []
        logits_rows: list[int] = []
        rows = 0
        for c in chunks:
            rid = c.request.request_id
            token_ids.append(c.request.token_slice(c.start, c.end))
            starts.append(c.start)
            tables.append(kv.block_table(rid))
            slots.append(kv.slot_mapping(rid, c.start, c.end))
            rows += c.end - c.start
            if c.sample:
                logits_rows.append(rows - 1)
        return ForwardBatch.build(token_ids, starts, tables, kv.page_size, slot_mappings=slots,
                                  logits_indices=logits_rows, device=self.device)

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        return self.model.forward(batch, self.kv.kv_caches, self.kv.page_size)

    def sample(self, logits: torch.Tensor, chunks: list[Chunk]) -> SampleResult:
        rows = [c.request for c in chunks if c.sample]
        return self.sampler.sample(logits, rows)
