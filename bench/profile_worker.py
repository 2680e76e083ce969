"""The profiled workload, run in its own process so py-spy can sample it from outside.

`python -m bench.profile_worker --requests N --out result.json [--torch-profile]`: AstrAI
continuous bf16 on the first N offline requests; sums the engine's per-step phase times from
its trace events and, with --torch-profile, records torch operator self times.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

from bench.config import FULL
from bench.systems.astrai import AstraiSystem
from bench.workload import offline_workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--torch-profile", action="store_true")
    args = ap.parse_args()
    s = FULL
    requests = offline_workload(s.num_requests, s.prompt_len, s.output_len, seed=0)[: args.requests]
    system = AstraiSystem(torch.bfloat16, "continuous", s.batch_size, s.prompt_len[1] + s.output_len[1])
    phases: Counter = Counter()
    counts = Counter()

    def on_step(event) -> None:
        d = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        phases.update({k: float(v) for k, v in (d.get("phases_ms") or {}).items()})
        counts["steps"] += 1
        counts["prefill_tokens"] += sum(p.get("num_tokens", 0) for p in d.get("prefill") or [])
        counts["decode_tokens"] += len(d.get("decode") or [])

    try:
        system.warmup()
        unsubscribe = system.engine.subscribe(on_step)
        ops = None
        start = time.perf_counter()
        if args.torch_profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = system.offline(requests, s.temperature)
            ops = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
                   for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]]
        else:
            result = system.offline(requests, s.temperature)
        wall = time.perf_counter() - start
        unsubscribe()
    finally:
        system.close()
    json.dump({"offline": result.to_dict(), "wall_s": wall, "phases_ms": dict(phases),
               "counts": dict(counts), "torch_ops": ops}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
