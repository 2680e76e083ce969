"""Defaults that depend on the machine: device, dtype, and how many KV pages to allocate."""

from __future__ import annotations

import os

import torch
from astrai.model import ForwardModel, ModelConfig, fast_bf16_cpu, resolve_dtype

CPU_KV_CAP_BYTES = 2 << 30  # 2 GiB: ~93k tokens of SmolLM2 bf16 KV; more only via num_pages
CPU_KV_FRACTION = 0.25
CUDA_KV_FRACTION = 0.85


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def engine_dtype(dtype: str | torch.dtype | None, device: torch.device, low_bit: bool) -> torch.dtype:
    """The dtype an engine computes in: the given one, else the engine's choice for this machine.

    CUDA: bfloat16 (tensor cores). CPU: float32 for low-bit GGUF weights (the native low-bit
    kernels take float32 activations); for dense weights bfloat16 where the CPU has fast bf16
    matmuls (AVX512-BF16 / AMX), else float32 (on AVX2-only CPUs bf16 is emulated and slower).
    """
    if device.type == "cuda":
        default = torch.bfloat16
    elif low_bit:
        default = torch.float32
    else:
        default = torch.bfloat16 if fast_bf16_cpu() else torch.float32
    return resolve_dtype(dtype, default=default)


def kv_cache_dtype(dtype: str | torch.dtype | None, model: ForwardModel) -> torch.dtype:
    """The KV cache's dtype: the given one, else float16 for low-bit models (half the memory and
    bandwidth of float32, as llama.cpp does) and the model's own dtype otherwise."""
    return resolve_dtype(dtype, default=torch.float16 if model.low_bit else model.dtype)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: mem_get_info; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 30


def kv_budget_bytes(device: torch.device | str = "cpu", *, share: int = 1, available: int | None = None) -> int:
    """Bytes for the KV pool when `share` engines split one machine's budget (the one place it is computed).

    CUDA: most of the free device memory; CPU: a fraction of MemAvailable, capped (the rest is
    the OS's, the weights' and the activations'). `available` replaces the measured free memory.
    """
    device = torch.device(device)
    free = available_memory_bytes(device) if available is None else available
    budget = free * CUDA_KV_FRACTION if device.type == "cuda" else min(free * CPU_KV_FRACTION, CPU_KV_CAP_BYTES)
    return int(budget // max(1, share))


def pages_in_budget(config: ModelConfig, dtype: str | torch.dtype, page_size: int, budget_bytes: int) -> int:
    """How many KV pages of this model and dtype fit in `budget_bytes` (at least one)."""
    return max(1, int(budget_bytes // (config.kv_bytes_per_token(dtype) * page_size)))


def default_num_pages(config: ModelConfig, dtype: torch.dtype, device: torch.device, page_size: int, max_num_seqs: int) -> int:
    """Size the KV pool from free memory (`kv_budget_bytes`), never more than every sequence at
    full context could use."""
    pages = pages_in_budget(config, dtype, page_size, kv_budget_bytes(device))
    most = -(-max_num_seqs * config.max_position_embeddings // page_size)
    return max(1, min(pages, most))
