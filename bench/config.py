"""Workload sizes for a full run and for `--quick`: one place to scale the whole suite.

The four headline workloads are the issue's: batch-1 decode (128-token prompt, 128 tokens),
one streaming user and 16 concurrent streams over HTTP (128 in / 128 out), and offline
64 x (128 -> 128). `--quick` keeps every code path but shortens outputs and repeats.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """How much work each section does; `rounds` is how often peers alternate (A, B, A, B)."""

    name: str
    rounds: int = 3  # interleaved repetitions per comparison; the best is reported
    # batch-1 decode (in-process engine vs llama-bench)
    decode_prompt: int = 128
    decode_tokens: int = 128
    prefill_prompts: tuple[int, ...] = (512, 1024)  # prompt processing / TTFT, batch 1
    # serving over HTTP (guidellm against astrai serve and llama-server -np N)
    serving_prompt_tokens: int = 128
    serving_output_tokens: int = 128
    serving_concurrency: tuple[int, ...] = (1, 16, 64)
    serving_requests_single: int = 6  # at concurrency 1
    serving_waves: int = 2  # requests = waves x concurrency above 1 (steady state, not one burst)
    serving_rounds: int = 2
    ttft_prompt_tokens: int = 1024
    ttft_output_tokens: int = 8
    ttft_requests: int = 4
    # offline batch (Engine.generate vs llama-batched-bench)
    offline_batch: int = 64
    offline_prompt: int = 128
    offline_output: int = 128
    offline_rounds: int = 2
    hf_offline: bool = True  # transformers static batch of the same requests (once)
    # prefix cache
    prefix_len: int = 1024
    prefix_question_len: int = 32
    prefix_trials: int = 3
    # profile: one batch-1 request and one batch of offline_batch requests
    profile_batch1_tokens: int = 64
    profile_batch_tokens: int = 32
    # speculation: bench/speculation_workloads.json, greedy, natural stops
    spec_tokens: int = 384  # max_tokens per request
    spec_variants: int = 4  # prompts per workload
    spec_streams: int = 16  # concurrent requests in the streams comparison
    # GPU: nano-vllm's exact workload
    gpu_requests: int = 256
    gpu_len: tuple[int, int] = (100, 1024)

    def serving_requests(self, concurrency: int) -> int:
        return self.serving_requests_single if concurrency == 1 else self.serving_waves * concurrency


FULL = Scale(name="full")

QUICK = Scale(
    name="quick",
    rounds=1,
    decode_tokens=32,
    prefill_prompts=(256,),
    serving_output_tokens=16,
    serving_concurrency=(1, 16),
    serving_requests_single=2,
    serving_waves=1,
    serving_rounds=1,
    ttft_prompt_tokens=256,
    ttft_requests=2,
    ttft_output_tokens=4,
    offline_batch=16,
    offline_output=16,
    offline_rounds=1,
    hf_offline=False,
    prefix_trials=2,
    profile_batch1_tokens=16,
    profile_batch_tokens=8,
    gpu_requests=32,
    spec_tokens=96,
    spec_variants=1,
)
