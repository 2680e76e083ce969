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
    # Fixed leading subsets (None: all requests) for the configurations that cannot finish the
    # whole workload inside the 30-minute budget on the shared 2-core VM. The report marks them.
    static_bf16_requests: int | None = 64  # exactly one full static batch
    fp32_requests: int | None = 32  # AstrAI fp32 (AMX makes bf16 ~4x faster on this CPU)
    hf_requests: int = 4  # transformers: one static batch of the subset (its generate is slow here)
    llamacpp_requests: int = 4  # llama.cpp: sequential requests
    # latency
    latency_prompts: tuple[int, ...] = (128, 1024)
    latency_decode_tokens: int = 64
    # serving (Poisson arrivals against `astrai serve`)
    serving_rates: tuple[float, ...] = (1.0, 4.0)
    serving_requests: int = 16
    serving_window_s: float = 20.0
    serving_prompt_words: tuple[int, int] = (64, 256)
    serving_output_len: tuple[int, int] = (32, 96)
    # prefix cache
    prefix_len: int = 1024
    prefix_question_len: int = 32
    prefix_trials: int = 3
    # profile
    profile_requests: int = 16
    # GPU: nano-vllm's exact workload
    gpu_requests: int = 256
    gpu_len: tuple[int, int] = (100, 1024)
    extra: dict = field(default_factory=dict)


FULL = Scale(name="full")

QUICK = Scale(
    name="quick",
    num_requests=8,
    prompt_len=(64, 128),
    output_len=(16, 64),
    batch_size=8,
    static_bf16_requests=None,
    fp32_requests=4,
    hf_requests=4,
    llamacpp_requests=1,
    latency_prompts=(128, 1024),
    latency_decode_tokens=16,
    serving_rates=(2.0,),
    serving_requests=6,
    serving_window_s=8.0,
    serving_prompt_words=(32, 64),
    serving_output_len=(16, 32),
    prefix_trials=2,
    profile_requests=4,
    gpu_requests=32,
)
