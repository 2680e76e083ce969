"""llama.cpp through llama-cpp-python on the same GGUF, one request after another.

That is what a llama-cpp-python user gets: no batching across requests. `Llama.generate`
never stops on EOS by itself, so taking exactly `max_tokens` tokens is ignore_eos.
"""

from __future__ import annotations

import os
import time

from bench.model_info import gguf_path
from bench.progress import bar
from bench.systems.base import LatencyResult, OfflineResult, System
from bench.workload import Request


def available() -> str | None:
    """None when usable, else why not."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (run bench/setup_peers.sh)"
    return None


class LlamaCppSystem(System):
    name = "llama.cpp (sequential)"

    def __init__(self, n_ctx: int = 2048):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path()), n_ctx=n_ctx, n_batch=512,
                         n_threads=os.cpu_count(), verbose=False)

    def _run(self, prompt_ids: list[int], max_tokens: int, temperature: float) -> list[float]:
        """Generate exactly max_tokens tokens; returns the time each token arrived."""
        self.llm.reset()
        stamps = []
        if temperature > 0:
            gen = self.llm.generate(prompt_ids, temp=temperature, top_k=0, top_p=1.0, min_p=0.0)
        else:
            gen = self.llm.generate(prompt_ids, temp=0.0)
        for _ in gen:
            stamps.append(time.perf_counter())
            if len(stamps) >= max_tokens:
                break
        return stamps

    def warmup(self) -> None:
        self._run(list(range(100, 116)), 4, 0.0)

    def offline(self, requests: list[Request], temperature: float) -> OfflineResult:
        start = time.perf_counter()
        with bar(total=sum(r.max_tokens for r in requests), desc=self.name, unit="tok") as pbar:
            for r in requests:
                self._run(r.prompt_token_ids, r.max_tokens, temperature)
                pbar.update(r.max_tokens)
        seconds = time.perf_counter() - start
        return OfflineResult.asked_for(requests, seconds)

    def latency(self, prompt_ids: list[int], decode_tokens: int) -> LatencyResult:
        start = time.perf_counter()
        stamps = self._run(prompt_ids, decode_tokens + 1, 0.0)
        return LatencyResult(len(prompt_ids), stamps[0] - start, len(stamps) - 1,
                             stamps[-1] - stamps[0])

    def prefix_ttft(self, prompt_ids: list[int]) -> float:
        """TTFT without a reset: llama.cpp reuses the longest prefix still in its context."""
        start = time.perf_counter()
        for _ in self.llm.generate(prompt_ids, temp=0.0, reset=True):
            return time.perf_counter() - start
        raise RuntimeError("llama.cpp produced no token")

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
