"""Where AstrAI's time goes: the engine's own phase breakdown and py-spy's Python hotspots
on the engine thread, sampled from outside the worker process."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.context import Context
from bench.machine import count_unreaped_cpu
from bench.progress import log

LINE_NO = re.compile(r":\d+\)")


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _worker(ctx: Context, batch: int, tokens: int, out: Path, torch_profile: bool) -> list[str]:
    cmd = [sys.executable, "-m", "bench.profile_worker", "--batch", str(batch), "--prompt", "128",
           "--tokens", str(tokens), "--out", str(out), "--astrai-args", " ".join(ctx.astrai.serve_args),
           "--model", ctx.model.key]
    return cmd + (["--torch-profile"] if torch_profile else [])


def parse_collapsed(text: str, top: int = 20, within: str | None = None) -> dict:
    """py-spy raw output ('frame;frame;... count' per line) -> self and inclusive hotspots,
    counting only stacks through a frame starting with `within` when given."""
    self_t: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [LINE_NO.sub(")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or (within and not any(f.startswith(within) for f in frames)):
            continue
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def table(c: Counter) -> list[dict]:
        return [{"frame": f, "samples": n, "percent": 100.0 * n / total} for f, n in c.most_common(top)]

    return {"total_samples": total, "self": table(self_t), "inclusive": table(incl)}


def _profile(ctx: Context, batch: int, tokens: int) -> dict:
    out: dict = {"batch": batch, "prompt_tokens": 128, "tokens": tokens}
    with tempfile.TemporaryDirectory(prefix="astrai-profile-") as tmp:
        result, stacks = Path(tmp) / "result.json", Path(tmp) / "stacks.txt"
        spy = _py_spy()
        worker = _worker(ctx, batch, tokens, result, torch_profile=True)
        if spy:
            cmd = [spy, "record", "--format", "raw", "--rate", "50", "--nonblocking", "-o", str(stacks), "--", *worker]
        else:
            cmd = worker
            out["py_spy"] = {"status": "skipped", "reason": "py-spy not installed (bench/setup_peers.sh)"}
        log(f"[profile] {'py-spy + ' if spy else ''}torch profiler, batch {batch} x (128 -> {tokens})")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if result.exists():
            out["phases"] = json.loads(result.read_text())
            if spy:  # py-spy does not reap the worker, so its CPU time is not among our children's
                count_unreaped_cpu(out["phases"].get("process_cpu_s", 0.0))
        else:
            out["phases"] = {"status": "error", "reason": proc.stderr[-1500:]}
        if spy:
            if stacks.exists():
                text = stacks.read_text()
                engine = parse_collapsed(text, within="Engine._run")
                out["py_spy"] = {"status": "ok", "scope": "engine thread (stacks through Engine._run)",
                                 **(engine if engine["total_samples"] else parse_collapsed(text))}
            else:
                out["py_spy"] = {"status": "error", "reason": proc.stderr[-1500:]}
    return out


def run(ctx: Context) -> dict:
    """A batch-1 and a full-batch (the offline batch size) profile of AstrAI's steps."""
    s = ctx.scale
    out: dict = {"workload": f"AstrAI (defaults + --astrai-args) on {ctx.model.title}, 128-token random-id prompts, "
                             "greedy",
                 "runs": {}}
    for label, batch, tokens in (("batch1", 1, s.profile_batch1_tokens),
                                 (f"batch{s.offline_batch}", s.offline_batch, s.profile_batch_tokens)):
        if ctx.out_of_time():
            out["runs"][label] = {"status": "skipped", "reason": ctx.out_of_time()}
            continue
        out["runs"][label] = _profile(ctx, batch, tokens)
    return out
