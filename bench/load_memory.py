"""What loading a GGUF adds to a process, measured in a fresh one (the memory section runs it).

    python -m bench.load_memory GGUF [--astrai-args "..."]

Prints one JSON object. The baseline is taken after torch, AstrAI and the native kernel library
are loaded (they cost the same for every file); then `Engine.from_pretrained(GGUF, **options)`
loads the file the way `astrai serve` does (weights packed or dequantized, the native forward
built, the KV pool reserved) and the resident set (VmRSS) is read again. The KV pool is
allocated but untouched until requests write it, so the difference is what the file's weights,
tokenizer and the engine's bookkeeping occupy. VmHWM (the peak) is reported too: loading may
hold a transient copy for a moment.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

from bench.astrai_options import AstraiOptions
from bench.machine import gguf_head
from bench.memory import model_tensor_bytes


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure(gguf: str, options: AstraiOptions) -> dict:
    import torch  # noqa: F401  (part of the baseline)
    from astrai.model.kernels import kernels
    from astrai.scheduler import Engine

    kernels()  # compile or load the kernel library before the baseline: it is not the file's
    gc.collect()
    base_rss, base_peak = _status_bytes("VmRSS"), _status_bytes("VmHWM")
    engine = Engine.from_pretrained(gguf, **options.engine_kwargs())
    try:
        gc.collect()
        rss, peak = _status_bytes("VmRSS"), _status_bytes("VmHWM")
        info = engine.describe()
        return {"gguf": Path(gguf).name, "file_bytes": Path(gguf).stat().st_size,
                "baseline_rss_bytes": base_rss, "rss_bytes": rss, "added_bytes": rss - base_rss,
                "peak_added_bytes": peak - base_rss if peak > base_peak else 0,
                "weight_bytes": model_tensor_bytes(engine.model), "kv_pool_bytes": engine.kv.capacity_bytes,
                "weights": info.weights, "forward": info.forward, "kernels": info.kernels,
                "lm_head": gguf_head(gguf)}
    finally:
        engine.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("--astrai-args", default="")
    args = ap.parse_args()
    print(json.dumps(measure(args.gguf, AstraiOptions.parse(args.astrai_args))))


if __name__ == "__main__":
    main()
