"""Turns a step plan into one ragged ForwardBatch, runs the model, samples the next tokens."""

from __future__ import annotations

import torch
from astrai.cache import KVCacheManager
from astrai.model import ForwardBatch, ForwardModel

from .prompt_logprobs import prompt_logprob_positions, record_prompt_logprobs
from .request import Request
from .sampler import Sampler, SampleResult, SamplingRow
from .scheduler import Chunk
from .speculation.verify import draft_rows


class ModelRunner:
    """Owns the model call for a step: batch building, forward, sampling."""

    def __init__(self, model: ForwardModel, kv: KVCacheManager, sampler: Sampler) -> None:
        self.model = model
        self.kv = kv
        self.sampler = sampler
        self.device = model.device
        self._prompt_rows: list[tuple[Request, int, int]] = []  # (request, first position, count) this step

    def build_batch(self, chunks: list[Chunk]) -> ForwardBatch:
        """All chunks' new tokens, flattened here (runs every step) and made into tensors by
        `ForwardBatch.from_flat`; logits only for chunks that sample: their last token, or every
        token of a verification chunk (the request's last token and its draft)."""
        kv = self.kv
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        tables: list[list[int]] = []
        context_lens: list[int] = []
        starts = [0]
        logits_rows: list[int] = []
        prompt_rows: list[int] = []
        self._prompt_rows = []
        for c in chunks:
            rid = c.request.request_id
            if c.request.prompt_logprobs is not None:  # scoring: rows of prompt positions too
                first, count = prompt_logprob_positions(c.request, c.start, c.end)
                if count:
                    row = len(token_ids) + first - c.start
                    prompt_rows += range(row, row + count)
                    self._prompt_rows.append((c.request, first, count))
            if c.draft:
                token_ids += c.request.token_slice(c.start, c.start + 1)
                token_ids += c.draft
            else:
                token_ids += c.request.token_slice(c.start, c.end)
            positions += range(c.start, c.end)
            slots += kv.slot_mapping(rid, c.start, c.end)
            tables.append(kv.block_table(rid))  # a fresh list: from_flat may pad it
            context_lens.append(c.end)
            starts.append(len(token_ids))
            if c.sample:
                logits_rows += range(len(token_ids) - 1 - len(c.draft), len(token_ids))
        return ForwardBatch.from_flat(token_ids, positions, slots, tables, context_lens, starts,
                                      logits_rows + prompt_rows, device=self.device)

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        return self.model.forward(batch, self.kv.kv_caches, self.kv.page_size)

    def sample(self, logits: torch.Tensor, chunks: list[Chunk]) -> SampleResult:
        """One token per sampling row, in chunk order: one row per chunk that samples, or
        len(draft) + 1 rows for a verification chunk."""
        rows: list[SamplingRow] = []
        for c in chunks:
            if c.draft:
                rows += draft_rows(c.request, c.draft)
            elif c.sample:
                rows.append(c.request)
        if self._prompt_rows:
            record_prompt_logprobs(logits[len(rows):], self._prompt_rows)
            logits = logits[: len(rows)]
        return self.sampler.sample(logits, rows)
