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
from bench.progress import log

LINE_NO = re.compile(r":\d+\)")


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _worker(requests: int, out: Path, torch_profile: bool) -> list[str]:
    cmd = [sys.executable, "-m", "bench.profile_worker", "--requests", str(requests), "--out", str(out)]
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


def run(ctx: Context) -> dict:
    n = ctx.scale.profile_requests
    out: dict = {"requests": n, "workload": "AstrAI continuous bf16, leading requests of the offline workload"}
    with tempfile.TemporaryDirectory(prefix="astrai-profile-") as tmp:
        result, stacks = Path(tmp) / "result.json", Path(tmp) / "stacks.txt"
        spy = _py_spy()
        if spy:
            cmd = [spy, "record", "--format", "raw", "--rate", "50", "--nonblocking",
                   "-o", str(stacks), "--", *_worker(n, result, False)]
        else:
            cmd = _worker(n, result, False)
            out["py_spy"] = {"status": "skipped", "reason": "py-spy not installed (bench/setup_peers.sh)"}
        log(f"[profile] {'py-spy + ' if spy else ''}engine phases on {n} requests")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if result.exists():
            out["phases"] = json.loads(result.read_text())
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
