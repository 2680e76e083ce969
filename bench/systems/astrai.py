"""AstrAI's Engine, continuous or static scheduling, in bf16 or fp32, on the bundled GGUF."""

from __future__ import annotations

import math
import threading
import time

import torch

from bench.model_info import gguf_path
from bench.progress import bar
from bench.systems.base import LatencyResult, OfflineResult, System
from bench.workload import Request

PAGE_SIZE = 16


def available() -> str | None:
    try:
        from astrai.scheduler import Engine  # noqa: F401
    except ImportError as error:
        return f"astrai.scheduler.Engine is not importable ({error})"
    return None


def pages_for(num_seqs: int, max_len: int, page_size: int = PAGE_SIZE) -> int:
    """A KV pool that fits num_seqs sequences of max_len tokens, so nothing is preempted
    and the pool is not sized from the (shared) machine's free memory."""
    return num_seqs * math.ceil(max_len / page_size) + 8


def _event_field(event, name):
    value = getattr(event, name, None)
    if value is None and hasattr(event, "to_dict"):
        value = event.to_dict().get(name)
    return value or []


class AstraiSystem(System):
    def __init__(self, dtype: torch.dtype, scheduling: str, batch_size: int, max_model_len: int,
                 enable_prefix_cache: bool = False, max_num_batched_tokens: int = 2048):
        from astrai.scheduler import Engine

        self.dtype_name = str(dtype).removeprefix("torch.")
        self.name = f"AstrAI {scheduling} {self.dtype_name}"
        self.engine = Engine.from_pretrained(
            str(gguf_path()), dtype=dtype, max_num_seqs=batch_size,
            max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
            page_size=PAGE_SIZE, num_pages=pages_for(batch_size, max_model_len),
            enable_prefix_cache=enable_prefix_cache, scheduling=scheduling,
        )

    @staticmethod
    def params(max_tokens: int, temperature: float):
        from astrai.scheduler import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=temperature, ignore_eos=True)

    def warmup(self) -> None:
        self.engine.generate([list(range(100, 116))] * 2, self.params(4, 0.0))

    def offline(self, requests: list[Request], temperature: float) -> OfflineResult:
        params = [self.params(r.max_tokens, temperature) for r in requests]
        prompts = [r.prompt_token_ids for r in requests]
        lock = threading.Lock()
        with bar(total=len(requests), desc=self.name, unit="req") as pbar:
            def on_step(event) -> None:
                done = len(_event_field(event, "finished"))
                if done:
                    with lock:
                        pbar.update(done)

            unsubscribe = self.engine.subscribe(on_step)
            try:
                start = time.perf_counter()
                outputs = self.engine.generate(prompts, params)
                seconds = time.perf_counter() - start
            finally:
                unsubscribe()
        produced = sum(len(o.token_ids) for o in outputs)
        expected = sum(r.max_tokens for r in requests)
        notes = [] if produced == expected else [f"engine produced {produced} of {expected} tokens"]
        return OfflineResult(
            num_requests=len(requests),
            prompt_tokens=sum(len(p) for p in prompts),
            output_tokens=produced,
            seconds=seconds,
            computed_tokens=sum(len(p) for p in prompts) + produced,
            notes=notes,
        )

    def stream_times(self, prompt_ids: list[int], max_tokens: int) -> tuple[float, list[float], object]:
        """Send one request alone; returns (start, arrival time of each token, final output)."""
        start = time.perf_counter()
        stamps: list[float] = []
        final = None
        for delta in self.engine.stream(prompt_ids, self.params(max_tokens, 0.0)):
            now = time.perf_counter()
            stamps.extend([now] * len(delta.token_ids))
            if delta.finished:
                final = delta
        return start, stamps, final

    def latency(self, prompt_ids: list[int], decode_tokens: int) -> LatencyResult:
        start, stamps, _ = self.stream_times(prompt_ids, decode_tokens + 1)
        return LatencyResult(len(prompt_ids), stamps[0] - start, len(stamps) - 1,
                             stamps[-1] - stamps[0])

    def stats(self) -> dict:
        return dict(self.engine.stats())

    def close(self) -> None:
        self.engine.shutdown()
