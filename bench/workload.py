"""Deterministic synthetic workloads (random token ids, seeded) shared by every system."""

from __future__ import annotations

import random
from dataclasses import dataclass

# The default id range: ordinary tokens of SmolLM2 (its special tokens are ids 0-16); sections
# pass their model's own range (bench/models.py).
TOKEN_RANGE = (100, 10000)


@dataclass(frozen=True)
class Request:
    """One offline request: prompt token ids and how many tokens to generate (ignore_eos)."""

    prompt_token_ids: list[int]
    max_tokens: int


def random_ids(rng: random.Random, n: int, token_range: tuple[int, int] = TOKEN_RANGE) -> list[int]:
    """n ids drawn uniformly from token_range (inclusive): ordinary tokens, no special ones."""
    return [rng.randint(*token_range) for _ in range(n)]


def offline_workload(
    num_requests: int, prompt_len: tuple[int, int], output_len: tuple[int, int], seed: int = 0
) -> list[Request]:
    """nano-vllm's benchmark shape: uniform prompt and output lengths, random ids, seed 0."""
    rng = random.Random(seed)
    prompts = [random_ids(rng, rng.randint(*prompt_len)) for _ in range(num_requests)]
    outputs = [rng.randint(*output_len) for _ in range(num_requests)]
    return [Request(p, o) for p, o in zip(prompts, outputs, strict=True)]


def fixed_workload(num_requests: int, prompt_len: int, output_len: int, seed: int = 0,
                   token_range: tuple[int, int] = TOKEN_RANGE) -> list[Request]:
    """Every request the same size (the issue's 64 x (128 -> 128)), like llama-batched-bench."""
    rng = random.Random(seed)
    return [Request(random_ids(rng, prompt_len, token_range), output_len) for _ in range(num_requests)]


def describe(requests: list[Request]) -> dict:
    return {
        "num_requests": len(requests),
        "prompt_tokens": sum(len(r.prompt_token_ids) for r in requests),
        "output_tokens": sum(r.max_tokens for r in requests),
        "max_prompt_len": max(len(r.prompt_token_ids) for r in requests),
        "max_output_len": max(r.max_tokens for r in requests),
    }
