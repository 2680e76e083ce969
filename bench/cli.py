"""`python -m bench [--quick] [--only X,Y] [--skip-peers]`: run the suite, save one JSON under
bench/results/ and regenerate BENCHMARKS.md from it."""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench import report
from bench.config import FULL, QUICK
from bench.context import Context
from bench.machine import REPO, machine_info, roofline
from bench.progress import log

SECTIONS = ("roofline", "prefix", "serving", "offline", "latency", "profile", "gpu")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small workloads, under 5 minutes")
    ap.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    ap.add_argument("--skip-peers", action="store_true", help="AstrAI only: no transformers / llama.cpp")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="skip remaining work after this many minutes (default: 27 full, 4.5 quick)")
    ap.add_argument("--no-report", action="store_true", help="write the JSON but leave BENCHMARKS.md alone")
    ap.add_argument("--report-from", type=Path, help="only regenerate BENCHMARKS.md from this result JSON")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = only or list(SECTIONS)
    return args


def _run_section(name: str, ctx: Context) -> dict:
    if name == "roofline":
        return {"roofline": roofline(ctx.quick)}
    if name in ("offline", "latency"):
        from bench import throughput

        return throughput.run(ctx, do_offline=name == "offline", do_latency=name == "latency")
    module = __import__(f"bench.{name}", fromlist=["run"])
    return {name: module.run(ctx)}


def _plan(sections: list[str]) -> list[str]:
    """offline and latency share one pass over the systems (each model loaded once)."""
    plan = [s for s in sections if s != "latency"]
    if "latency" in sections and "offline" not in sections:
        plan.insert(0, "latency")
    return plan


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_from:
        report.write(args.report_from, REPO / "BENCHMARKS.md")
        log(f"wrote {REPO / 'BENCHMARKS.md'} from {args.report_from}")
        return 0
    ctx = Context(scale=QUICK if args.quick else FULL, quick=args.quick, skip_peers=args.skip_peers)
    budget_min = args.budget_min if args.budget_min is not None else (4.5 if args.quick else 27.0)
    ctx.deadline = time.monotonic() + budget_min * 60
    started = datetime.now(timezone.utc)
    result: dict = {"format": "astrai-bench", "version": 1, "mode": ctx.scale.name,
                    "started": started.strftime("%Y-%m-%d %H:%M UTC"), "sections": args.sections,
                    "skip_peers": args.skip_peers, "budget_min": budget_min, "machine": machine_info()}
    t0 = time.perf_counter()
    for name in _plan(args.sections):
        log(f"== {name} ==")
        if name == "profile" and ctx.out_of_time():
            result[name] = {"status": "skipped", "reason": ctx.out_of_time()}
            continue
        s0 = time.perf_counter()
        try:
            if name == "offline":
                from bench import throughput

                result.update(throughput.run(ctx, do_offline=True, do_latency="latency" in args.sections))
            else:
                result.update(_run_section(name, ctx))
        except Exception as error:  # keep what the other sections measured
            result[name] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc(limit=6)}
            log(f"[error] {name}: {error}")
        result.setdefault("section_seconds", {})[name] = time.perf_counter() - s0
        ctx.results = result
    result["elapsed_s"] = time.perf_counter() - t0
    result["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{ctx.scale.name}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {path} ({result['elapsed_s'] / 60:.1f} min)")
    if not args.no_report:
        report.write(path, REPO / "BENCHMARKS.md")
        log(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 0
