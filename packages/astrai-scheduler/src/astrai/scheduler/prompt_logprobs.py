"""Prompt logprobs (SamplingParams.prompt_logprobs): the model's log-softmax scoring each prompt token.

The logits at position j predict token j+1, so a prefill chunk over positions [start, end)
scores prompt tokens start+1 .. end (never past the prompt). A request that asks for them
computes its whole prompt (the prefix cache is bypassed: cached positions have no logits),
and a preempted one that recomputes does not score the same tokens twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class ScoredRequest(Protocol):
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[str, Any] | None] | None
    params: Any


def prompt_logprob_positions(req: ScoredRequest, start: int, end: int) -> tuple[int, int]:
    """(first position, how many) whose logits this chunk must return for prompt scoring."""
    assert req.prompt_logprobs is not None
    first = max(start, len(req.prompt_logprobs) - 1)  # entries so far score tokens 1..len-1
    last = min(end, len(req.prompt_token_ids) - 1)  # position P-1 predicts the first output token
    return first, max(0, last - first)


@torch.inference_mode()
def record_prompt_logprobs(logits: torch.Tensor, spans: Sequence[tuple[ScoredRequest, int, int]]) -> None:
    """Append each span's entries {token_id, logprob, top} to its request, rows in span order."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    row = 0
    for req, first, count in spans:
        targets = torch.tensor(req.prompt_token_ids[first + 1 : first + 1 + count], device=lp.device)
        block = lp[row : row + count]
        chosen = block.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
        k = int(req.params.prompt_logprobs or 0)
        tops: list[list[tuple[int, float]]] = [[] for _ in range(count)]
        if k > 0:
            values, ids = block.topk(k, dim=-1)
            tops = [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
        assert req.prompt_logprobs is not None
        for t, value, top in zip(targets.tolist(), chosen, tops, strict=True):
            req.prompt_logprobs.append({"token_id": t, "logprob": value, "top": top})
        row += count
