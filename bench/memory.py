"""Memory: what loading the GGUF adds to a process, and idle `astrai serve` resident memory.

- Load: `python -m bench.load_memory` in a fresh process: VmRSS after `Engine.from_pretrained`
  minus VmRSS before it (torch, AstrAI and the kernel library already loaded), against the
  file's size + the model's load overhead target (Gemma: 300 MB); what the LM head / embedding
  table costs is recorded with it.
- Serve: idle `astrai serve` (defaults + --astrai-args) RSS after loading, against its budget:
  the weights it holds + its KV pool + 500 MB. llama-server's idle RSS for reference.

RSS is read from /proc/PID/status (VmRSS) a few seconds after /health turns 200, with no
request sent. The budget's parts come from the same engine built in-process with the same
options: bytes of every tensor the model holds (parameters, buffers and packed copies,
shared storage counted once) and the KV pool's capacity in bytes.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time

import torch
from astrai.model import ForwardModel, NativeForward

from bench.context import Context
from bench.progress import log
from bench.server_process import AstraiServer, LlamaServer

IDLE_WAIT_S = 3.0


def _idle_rss(server) -> dict:
    time.sleep(IDLE_WAIT_S)
    samples = []
    for _ in range(5):
        samples.append(server.rss())
        time.sleep(0.4)
    return {"rss_bytes": max(x for x in samples if x is not None), "load_seconds": server.load_seconds,
            "command": " ".join(server.args)}


def model_tensor_bytes(model: ForwardModel | torch.nn.Module) -> int:
    """Every tensor a model holds (parameters, buffers, tensors kept as plain attributes such as
    pre-packed weights), each storage once. The native forward holds its Transformer's tensors."""
    if isinstance(model, NativeForward):
        model = model.model
    seen: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # opaque (e.g. mkldnn) tensors have no storage
            seen[id(t)] = t.numel() * t.element_size()

    for module in model.modules():
        for value in list(module._parameters.values()) + list(module._buffers.values()) + list(vars(module).values()):
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                packed = getattr(item, "data", None)  # a packed low-bit weight holds its blocks in .data
                if isinstance(item, torch.Tensor):
                    add(item)
                elif isinstance(packed, torch.Tensor):
                    add(packed)
    return sum(seen.values())


def _budget(ctx: Context, model: str) -> dict:
    from bench.systems.astrai import AstraiSystem

    overhead = ctx.model.targets.serve_overhead_bytes or 0
    system = AstraiSystem(model, ctx.astrai)
    try:
        engine = system.engine
        weights = model_tensor_bytes(engine.model)
        kv = getattr(getattr(engine, "kv", None), "capacity_bytes", None)
        stats = system.stats()
        return {"weight_bytes": weights, "kv_pool_bytes": kv, "num_pages": stats.get("num_pages"),
                "page_size": stats.get("page_size"), "dtype": engine.describe().kv_cache_dtype or str(getattr(engine.model, "dtype", None)),
                "overhead_bytes": overhead,
                "budget_bytes": weights + (kv or 0) + overhead if kv is not None else None}
    finally:
        system.close()
        gc.collect()


def load_added(model: str, ctx: Context) -> dict:
    """bench.load_memory in a fresh process: RSS added by loading the file (see its docstring)."""
    cmd = [sys.executable, "-m", "bench.load_memory", model, "--astrai-args", " ".join(ctx.astrai.serve_args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.load_memory exited with {proc.returncode}: {proc.stderr[-1500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    target = ctx.model.targets.load_overhead_bytes
    if target is not None:
        out["target_overhead_bytes"] = target
        out["target_bytes"] = out["file_bytes"] + target
    return out


def run(ctx: Context) -> dict:
    model = ctx.model_path()
    out: dict = {"status": "ok", "astrai_args": ctx.astrai.serve_args}
    try:
        out["load"] = load_added(model, ctx)
        log(f"[memory] loading {out['load']['gguf']} added {out['load']['added_bytes'] / 2**20:,.0f} MiB "
            f"(file {out['load']['file_bytes'] / 2**20:,.0f} MiB)")
    except Exception as error:  # the serve measurement still runs
        out["load"] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
        log(f"[memory] load: {error}")
    with AstraiServer(model, ctx.astrai.serve_args) as server:
        out["astrai_serve"] = _idle_rss(server)
    log(f"[memory] astrai serve idle RSS {out['astrai_serve']['rss_bytes'] / 2**20:,.0f} MiB")
    out["budget"] = _budget(ctx, model)
    if ctx.wants_peers():
        s = ctx.scale
        slot = s.serving_prompt_tokens + s.serving_output_tokens + 128
        for parallel in (1, 16):
            try:
                with LlamaServer(model, parallel, slot, ctx.threads, []) as llama:
                    out[f"llama_server_np{parallel}"] = _idle_rss(llama)
            except Exception as error:
                out[f"llama_server_np{parallel}"] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
    return out
