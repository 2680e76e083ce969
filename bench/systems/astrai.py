"""AstrAI's Engine on the run's GGUF, with the engine's defaults plus the bench's --astrai-args."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from bench.astrai_options import AstraiOptions
from bench.progress import bar
from bench.systems.base import LatencyResult, OfflineResult, System
from bench.workload import Request


def available() -> str | None:
    try:
        from astrai.scheduler import Engine  # noqa: F401
    except ImportError as error:
        return f"astrai.scheduler.Engine is not importable ({error})"
    return None


def _event_field(event, name):
    value = getattr(event, name, None)
    if value is None and hasattr(event, "to_dict"):
        value = event.to_dict().get(name)
    return value or []


class AstraiSystem(System):
    """`overrides` are the bench's own needs (e.g. prefix cache on for the prefix section);
    everything else is what `astrai serve` would use with the same flags."""

    def __init__(self, model: str, options: AstraiOptions | None = None, **overrides: Any):
        from astrai.scheduler import Engine

        options = options or AstraiOptions()
        self.kwargs = {**options.engine_kwargs(), **overrides}
        self.name = "AstrAI" + (f" ({options.describe()})" if options.serve_args else "")
        start = time.perf_counter()
        self.engine = Engine.from_pretrained(model, **self.kwargs)
        self.load_seconds = time.perf_counter() - start

    @staticmethod
    def params(max_tokens: int, temperature: float = 0.0):
        from astrai.scheduler import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=temperature, ignore_eos=True)

    def describe(self) -> dict:
        """What the engine actually runs with (its own EngineInfo), for the record."""
        info = self.engine.describe()
        return {"engine_kwargs": {k: str(v) for k, v in self.kwargs.items()},
                **(dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(info)),
                "stats": self.stats()}

    def warmup(self) -> None:
        self.engine.generate([list(range(100, 116))] * 2, self.params(4))

    def offline(self, requests: list[Request], temperature: float = 0.0) -> OfflineResult:
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
        return OfflineResult(num_requests=len(requests), prompt_tokens=sum(len(p) for p in prompts),
                             output_tokens=produced, seconds=seconds, notes=notes)

    def stream_times(self, prompt_ids: list[int], max_tokens: int) -> tuple[float, list[float], object]:
        """Send one request alone; returns (start, arrival time of each token, final output)."""
        start = time.perf_counter()
        stamps: list[float] = []
        final = None
        for delta in self.engine.stream(prompt_ids, self.params(max_tokens)):
            now = time.perf_counter()
            stamps.extend([now] * len(delta.token_ids))
            if delta.finished:
                final = delta
        return start, stamps, final

    def latency(self, prompt_ids: list[int], decode_tokens: int) -> LatencyResult:
        start, stamps, _ = self.stream_times(prompt_ids, decode_tokens + 1)
        return LatencyResult(len(prompt_ids), stamps[0] - start, len(stamps) - 1, stamps[-1] - stamps[0])

    def stats(self) -> dict:
        return dict(self.engine.stats())

    def close(self) -> None:
        self.engine.shutdown()
