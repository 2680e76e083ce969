"""Workload sizes for a full run and for `--quick`: one place to scale the whole suite."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    """How much work each section does. Peers that are too slow run a fixed request subset."""

    name: str
    # offline throughput: nano-vllm's shape scaled for a 2-core CPU
    num_requests: int = 128
    prompt_len: tuple[int, int] = (64, 512)
    output_len: tuple[int, int] = (64, 512)
    batch_size: int = 64
    temperature: float = 0.6
    # AstrAI configurations that may run a subset because they are slow by design
    static_fp32_requests: int | None = None
    hf_requests: int = 64  # transformers: one full static batch
    llamacpp_requests: int = 8  # llama.cpp: sequential requests
    # latency
    latency_prompts: tuple[int, ...] = (128, 1024)
    latency_decode_tokens: int = 128
    # serving (Poisson arrivals against `astrai serve`)
    serving_rates: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    serving_requests: int = 32
    serving_window_s: float = 45.0
    serving_prompt_words: tuple[int, int] = (64, 256)
    serving_output_len: tuple[int, int] = (32, 128)
    # prefix cache
    prefix_len: int = 1024
    prefix_question_len: int = 32
    prefix_trials: int = 5
    # profile
    profile_requests: int = 32
    # GPU: nano-vllm's exact workload
    gpu_requests: int = 256
    gpu_len: tuple[int, int] = (100, 1024)
    extra: dict = field(default_factory=dict)


FULL = Scale(name="full")

QUICK = Scale(
    name="quick",
    num_requests=16,
    prompt_len=(64, 256),
    output_len=(32, 128),
    batch_size=16,
    hf_requests=16,
    llamacpp_requests=2,
    latency_decode_tokens=32,
    serving_rates=(1.0, 4.0),
    serving_requests=8,
    serving_window_s=15.0,
    serving_output_len=(16, 48),
    prefix_trials=2,
    profile_requests=8,
    gpu_requests=32,
)
