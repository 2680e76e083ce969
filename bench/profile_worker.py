"""The profiled workload, run in its own process so py-spy can sample it from outside.

`python -m bench.profile_worker --batch B --prompt P --tokens G --out result.json
[--model M] [--torch-profile] [--astrai-args "..."]`: AstrAI with its defaults (plus the options) on B
random-id prompts of P tokens, G tokens each, greedy; sums the engine's per-step phase times
from its trace events and, with --torch-profile, records torch operator self times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

from bench.astrai_options import AstraiOptions
from bench.models import DEFAULT_MODEL, MODELS, bench_model
from bench.systems.astrai import AstraiSystem
from bench.workload import fixed_workload


def _all_threads():
    """The engine steps on its own thread, started before the profiler: record every thread."""
    from torch._C._profiler import _ExperimentalConfig

    try:
        return _ExperimentalConfig(profile_all_threads=True)
    except TypeError:  # an older torch: only the calling thread's operators are recorded
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--torch-profile", action="store_true")
    ap.add_argument("--astrai-args", default="")
    ap.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL)
    args = ap.parse_args()
    model = bench_model(args.model)
    requests = fixed_workload(args.batch, args.prompt, args.tokens, seed=5, token_range=model.token_range)
    system = AstraiSystem(str(model.path()), AstraiOptions.parse(args.astrai_args))
    phases: Counter = Counter()
    counts: Counter = Counter()
    decode_steps: list[tuple[float, float]] = []  # (step total, forward) of full-batch decode steps

    def on_step(event) -> None:
        d = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        step_phases = {k: float(v) for k, v in (d.get("phases_ms") or {}).items()}
        phases.update(step_phases)
        counts["steps"] += 1
        prefill = sum(p.get("num_tokens", 0) for p in d.get("prefill") or [])
        counts["prefill_tokens"] += prefill
        counts["decode_tokens"] += len(d.get("decode") or [])
        if not prefill and len(d.get("decode") or []) == args.batch and "forward" in step_phases:
            decode_steps.append((sum(step_phases.values()), step_phases["forward"]))

    try:
        system.warmup()
        unsubscribe = system.engine.subscribe(on_step)
        ops = None
        start = time.perf_counter()
        if args.torch_profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], experimental_config=_all_threads()) as prof:
                result = system.offline(requests)
            total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
            ops = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                    "percent": 100 * e.self_cpu_time_total / total}
                   for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]]
        else:
            result = system.offline(requests)
        wall = time.perf_counter() - start
        unsubscribe()
        engine = system.describe()
    finally:
        system.close()
    totals, forwards = sorted(t for t, _ in decode_steps), sorted(f for _, f in decode_steps)
    full_batch = {"count": len(decode_steps),
                  "median_step_ms": totals[len(totals) // 2] if totals else None,
                  "median_forward_ms": forwards[len(forwards) // 2] if forwards else None}
    with open(args.out, "w") as f:
        json.dump({"offline": result.to_dict(), "wall_s": wall, "phases_ms": dict(phases), "counts": dict(counts),
                   "full_batch_decode_steps": full_batch, "torch_ops": ops, "engine": engine,
                   "process_cpu_s": sum(os.times()[:4])}, f, indent=1)


if __name__ == "__main__":
    main()
