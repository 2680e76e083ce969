"""Machine description and roofline: measured bandwidth and matmul rate, and the model ceilings.

Batch-1 decode must stream every weight once per token, so its ceiling is
bandwidth / weight bytes. Batched decode is compute bound: 2 x parameters FLOP per token
divided by the measured matmul rate.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

from bench.models import BenchModel, num_parameters

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
                return [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    return []


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    names = ["astrai-model", "astrai-cache", "astrai-scheduler", "astrai-server", "torch", "transformers"]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def has_bf16_hardware() -> bool:
    """bf16 matmuls are native only with AVX512-BF16 or AMX; elsewhere torch emulates them slowly."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def machine_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (/proc/stat: all but idle
    and iowait; steal counts, it is other guests' work)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


_unreaped_cpu_s = 0.0


def count_unreaped_cpu(seconds: float) -> None:
    """Add the CPU seconds a descendant reported for itself because its parent never reaped it (a
    worker run under py-spy): os.times() cannot see them, and they are the bench's own."""
    global _unreaped_cpu_s
    _unreaped_cpu_s += seconds


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has reaped (servers, llama.cpp tools,
    guidellm and, through them, their own children), plus those counted by count_unreaped_cpu."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _unreaped_cpu_s


def load_snapshot() -> dict:
    """Taken at the start and end of every section: how busy the shared machine was. The load
    average counts the section's own processes too; the CPU-second counters let the report
    subtract them and see what everything else used."""
    return {"time": time.strftime("%H:%M:%S"), "load_average": list(os.getloadavg()), "cpu_model": cpu_model(),
            "cores": os.cpu_count(), "monotonic": time.monotonic(), "machine_busy_s": machine_busy_seconds(),
            "own_cpu_s": own_cpu_seconds()}


def machine_info() -> dict:
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": mem_total,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _best_time(fn, repeats: int) -> float:
    fn()  # warm caches, allocator and thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(num_bytes: int, repeats: int) -> float:
    """GB/s of dst.copy_(src): bytes read plus bytes written, per second."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), repeats)
    return 2 * num_bytes / seconds / 1e9


def read_bandwidth(num_bytes: int, repeats: int) -> float:
    """GB/s of a streaming reduction: the access pattern of a weight-bound decode step."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    seconds = _best_time(lambda: src.sum(), repeats)
    return num_bytes / seconds / 1e9


def matmul_tflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = _best_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e12


def kernel_peaks(quick: bool) -> dict:
    """Compute peaks of the instructions AstrAI's chosen kernel variant uses, every thread busy:
    int8 multiply-accumulates (AVX2 maddubs+madd, or one AVX-512 VNNI vpdpbusd per 4), 8-lane fp32
    FMA (attention, norms), and bf16 dot products where the variant has AVX512-BF16."""
    from astrai.model.kernels import kernels

    chosen = kernels()
    if chosen is None:
        return {"variant": "torch", "status": "skipped", "reason": "native kernels unavailable"}
    testing = chosen.testing_ops()
    iterations = 2_000_000 if quick else 20_000_000
    peaks = {"variant": chosen.variant,
             "int8_macs_per_s": max(testing.int8_mac_peak(iterations) for _ in range(3)),
             "fp32_flops_per_s": max(testing.fp32_fma_flops_peak(iterations) for _ in range(3))}
    bf16 = max(testing.bf16_dot_flops_peak(iterations) for _ in range(3))
    if bf16 > 0:
        peaks["bf16_dot_flops_per_s"] = bf16
    return peaks


def gguf_tensor_bytes(path: str) -> dict[str, int]:
    """Bytes of tensor data per ggml type in the GGUF (e.g. Q4_1 linears, Q8_0 embedding, F32 norms)."""
    from gguf import GGUFReader

    by_type: dict[str, int] = {}
    for t in GGUFReader(path).tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return by_type


def gguf_head(path: str) -> dict:
    """The LM head read every token: `output.weight`, or the token embedding when tied (no
    `output.weight`), with its type, shape, bytes and what it would take as float32."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    head = tensors.get("output.weight") or tensors["token_embd.weight"]
    cols, rows = (int(x) for x in head.shape[:2])  # ggml order: row length first
    return {"tensor": head.name, "tied": "output.weight" not in tensors, "type": head.tensor_type.name,
            "rows": rows, "cols": cols, "bytes": int(head.n_bytes), "float32_bytes": rows * cols * 4}


def roofline(quick: bool, model: BenchModel, model_path: str) -> dict:
    """Measure this machine, then turn it into tokens/s ceilings for the run's GGUF.

    Batch-1 decode streams every weight once per token: the GGUF's tensor bytes (a tied
    embedding is read whole as the LM head) over the streaming read bandwidth. Batched
    decode is compute bound: 2 x parameters FLOP per token over the dense matmul rate."""
    big = (256 if quick else 1024) * 2**20  # well above the last-level cache
    repeats = 3 if quick else 5
    copy_gbs = copy_bandwidth(big, repeats)
    read_gbs = read_bandwidth(big, repeats)
    n = 1024 if quick else 2048
    tflops = {"float32": matmul_tflops(torch.float32, n, repeats)}
    if has_bf16_hardware():
        tflops["bfloat16"] = matmul_tflops(torch.bfloat16, n, repeats)
    peaks = kernel_peaks(quick)
    params, params_source = num_parameters(model_path)
    by_type = gguf_tensor_bytes(model_path)
    gguf_bytes = sum(by_type.values())
    weights = {"gguf (" + " + ".join(sorted(by_type, key=lambda k: -by_type[k])) + ")": gguf_bytes,
               "float32 (dequantized)": params * 4}
    if has_bf16_hardware():
        weights["bfloat16 (dequantized)"] = params * 2
    ceilings = {}
    for label, nbytes in weights.items():
        entry = {"weight_bytes": nbytes, "batch1_decode_tok_s": read_gbs * 1e9 / nbytes}
        dense = "bfloat16" if label.startswith("bfloat16") else "float32"
        entry["batched_tok_s"] = tflops[dense] * 1e12 / (2 * params) if dense in tflops else None
        ceilings[label] = entry
    if "int8_macs_per_s" in peaks:
        # packed weights multiply both 8-bit parts of each activation: 2 int8 MACs per weight per token
        ceilings[f"int8 kernels ({peaks['variant']})"] = {
            "weight_bytes": gguf_bytes, "batch1_decode_tok_s": read_gbs * 1e9 / gguf_bytes,
            "batched_tok_s": peaks["int8_macs_per_s"] / (2 * params)}
    return {
        "kernel_peaks": peaks,
        "copy_bandwidth_gbs": copy_gbs,
        "read_bandwidth_gbs": read_gbs,
        "bandwidth_test_bytes": big,
        "matmul_tflops": tflops,
        "matmul_n": n,
        "model": model.title,
        "gguf": Path(model_path).name,
        "num_parameters": params,
        "num_parameters_source": params_source,
        "gguf_tensor_bytes": by_type,
        "lm_head": gguf_head(model_path),
        "ceilings": ceilings,
        "note": "batch-1 ceiling = streaming read bandwidth / weight bytes per token (KV reads ignored); "
                "batched ceiling = dense matmul rate / (2 x parameters) FLOP per token (fp32, or bf16 where the "
                "CPU has bf16 hardware); for the packed weights, the chosen kernel variant's int8 MAC rate / "
                "(2 x parameters) (two 8-bit activation parts per weight). A large L3 can hold part of the "
                "weights, so batch-1 can beat it.",
    }
