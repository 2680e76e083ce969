"""Hugging Face transformers `generate`, statically batched with left padding.

The common "just use transformers" choice: fixed batches of the same size AstrAI runs,
each batch generating until its longest member is done. Only the tokens each request asked
for are counted as output; the overshoot of shorter members is reported as wasted compute.
"""

from __future__ import annotations

import time

import torch

from bench.progress import bar
from bench.systems.base import LatencyResult, OfflineResult, System
from bench.workload import Request

PAD_ID = 0  # SmolLM2's <|endoftext|>, Gemma's <pad>; masked out by the attention mask


class _StepProgress:
    """A StoppingCriteria that never stops; it only advances a progress bar per decode step."""

    def __init__(self, pbar, per_step: int):
        self.pbar, self.per_step = pbar, per_step

    def __call__(self, input_ids, scores, **kwargs):
        self.pbar.update(self.per_step)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def _dense_gguf_kwargs() -> dict:
    """Ask for plain dense weights, like AstrAI's. Newer transformers otherwise keep GGUF blocks
    packed and unpack them on every matmul, which is far slower on CPU than a dense model."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantizes GGUF at load time
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


class _Stamps:
    """A StoppingCriteria that never stops; it records when each new token was produced."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


class TransformersSystem(System):
    def __init__(self, model: str, dtype: torch.dtype, batch_size: int):
        from pathlib import Path

        from transformers import AutoModelForCausalLM

        path = Path(model)
        self.dtype, self.batch_size = dtype, batch_size
        self.name = f"transformers {str(dtype).removeprefix('torch.')}"
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=dtype, **_dense_gguf_kwargs()
        ).eval()
        self.load_seconds = time.perf_counter() - start

    def _generate(self, prompts: list[list[int]], new_tokens: int, temperature: float,
                  stopping=None) -> None:
        from transformers import StoppingCriteriaList

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        sampling = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
                    if temperature > 0 else dict(do_sample=False))
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=PAD_ID,
                stopping_criteria=StoppingCriteriaList(stopping or []), **sampling,
            )

    def warmup(self) -> None:
        self._generate([list(range(100, 116))] * 2, 4, 0.0)

    def offline(self, requests: list[Request], temperature: float) -> OfflineResult:
        batches = [requests[i:i + self.batch_size] for i in range(0, len(requests), self.batch_size)]
        computed = sum(len(b) * (max(len(r.prompt_token_ids) for r in b) + max(r.max_tokens for r in b))
                       for b in batches)
        steps = sum(max(r.max_tokens for r in b) for b in batches)
        start = time.perf_counter()
        with bar(total=steps, desc=self.name, unit="step") as pbar:
            for b in batches:
                self._generate([r.prompt_token_ids for r in b], max(r.max_tokens for r in b),
                               temperature, [_StepProgress(pbar, 1)])
        seconds = time.perf_counter() - start
        return OfflineResult.asked_for(
            requests, seconds, computed_tokens=computed,
            notes=[f"batch size {self.batch_size}, left padding, each batch runs to its longest output"],
        )

    def latency(self, prompt_ids: list[int], decode_tokens: int) -> LatencyResult:
        stamps = _Stamps()
        start = time.perf_counter()
        self._generate([prompt_ids], decode_tokens + 1, 0.0, [stamps])
        t = stamps.times
        return LatencyResult(len(prompt_ids), t[0] - start, len(t) - 1, t[-1] - t[0])

    def close(self) -> None:
        del self.model
