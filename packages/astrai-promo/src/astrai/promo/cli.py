"""`astrai-promo record` and `astrai-promo render`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

SCENE_CHOICES = ("all", "architecture", "batching", "paged-cache")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrai-promo",
        description="Record a live AstrAI engine trace and render Manim videos from it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    record = commands.add_parser("record", help="run the engine on a small workload and write a trace file")
    record.add_argument("--out", required=True, help="trace file to write (JSON)")
    record.add_argument("--model", default="smollm2-135m-instruct",
                        help="built-in model name, HF model directory or .gguf file (default: the bundled SmolLM2)")
    record.add_argument("--workload", choices=("default", "small"), default="default",
                        help="'small' records fewer, shorter requests (used by the tests)")
    record.add_argument("--quiet", action="store_true", help="no progress bars")
    record.add_argument("--retrieval-from", default=None, metavar="URL",
                        help="a running `astrai serve` with vector stores: its store size and RAG cache hits go "
                             "into the trace (the architecture scene shows them)")
    record.add_argument("--api-key", default=None, help="that server's key (default: $ASTRAI_API_KEY)")

    render = commands.add_parser("render", help="render scenes from a trace file")
    render.add_argument("--trace", required=True, help="trace file written by `astrai-promo record`")
    render.add_argument("--scene", choices=SCENE_CHOICES, default="all")
    render.add_argument("--quality", choices=("low", "medium", "high"), default="low",
                        help="low 480p15, medium 720p30, high 1080p60")
    render.add_argument("--out", required=True, help="directory for <scene>.mp4 and <scene>.png")
    render.add_argument("--max-seconds", type=float, default=None,
                        help="cap each scene's length (steps are sampled to fit; default: 20-60 s per scene)")
    render.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _record(args: argparse.Namespace) -> int:
    from .record import record_trace

    path, trace = record_trace(args.out, model=args.model, workload=args.workload, progress=not args.quiet,
                               retrieval_from=args.retrieval_from,
                               api_key=args.api_key or os.environ.get("ASTRAI_API_KEY"))
    tp = trace.throughput
    print(
        f"wrote {path}: {len(trace.steps)} steps, {len(trace.requests)} requests; "
        f"static {tp['static']['tokens_per_s']:.1f} tok/s, continuous {tp['continuous']['tokens_per_s']:.1f} tok/s "
        f"({tp['ratio']:.2f}x)"
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    from .render import render_all, scene_names
    from .trace import load_trace

    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be positive, got {args.max_seconds}")
    trace = load_trace(args.trace)
    names = scene_names() if args.scene == "all" else [args.scene]
    for scene in render_all(trace, names, args.out, args.quality, args.max_seconds, progress=not args.quiet):
        print(f"wrote {scene.video} ({scene.seconds:.1f} s) and {scene.poster}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `astrai-promo` command; user errors print one line and return 2."""
    args = _parser().parse_args(argv)
    from .record import RecordError
    from .render import RenderError
    from .trace import TraceError

    try:
        return _record(args) if args.command == "record" else _render(args)
    except (TraceError, RenderError, RecordError, ValueError, OSError) as exc:
        print(f"astrai-promo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
