"""Beats of the continuous-batching scene, from the real steps of the trace."""

from __future__ import annotations

from dataclasses import dataclass, replace

from astrai.scheduler import PHASES

from ..replay import FREE, RequestSnapshot, replay_pages, replay_requests
from ..sampling import plan_timing, sample_indices
from ..trace import Trace
from . import format as fmt

DEFAULT_SECONDS = 45.0
# What the video calls each phase the engine times, in step order: "build_batch" -> "Build batch".
PHASE_TITLES = {key: key.replace("_", " ").capitalize() for key in PHASES}
MAX_LANES = 12
MAX_MASK_PAGES = 128


@dataclass(frozen=True)
class Phase:
    key: str  # the engine's phase name (astrai.scheduler.PHASES)
    name: str  # what the video shows
    mean_ms: float | None  # measured mean over the trace's steps, if the engine reported it


@dataclass(frozen=True)
class LoopBeat:
    phases: tuple[Phase, ...]
    forward_ms: float | None  # mean model forward, which prefill chunks and decode tokens share
    caption: str
    seconds: float


@dataclass(frozen=True)
class Lane:
    """One request's row: where it is in its life and how many tokens it has produced."""

    request_id: str
    state: str  # pending | waiting | prefill | decode | finished | gone
    tokens_out: int
    tokens_target: int
    label: str


@dataclass(frozen=True)
class BatchStepBeat:
    step: int
    skipped: int  # trace steps not shown since the previous beat
    active_phases: tuple[str, ...]  # Phase.key of the phases that did work this step
    lanes: tuple[Lane, ...]
    free_mask: tuple[bool, ...]  # True = free, for pages [0, len(free_mask))
    num_free_pages: int
    num_pages: int
    caption: str
    events: str
    key: bool  # the poster frame: the largest merged batch
    seconds: float


@dataclass(frozen=True)
class ThroughputBeat:
    static_tokens_per_s: float
    continuous_tokens_per_s: float
    static_label: str
    continuous_label: str
    ratio_text: str
    detail: str
    seconds: float


BatchingBeat = LoopBeat | BatchStepBeat | ThroughputBeat


def _score(step: dict, previous: dict | None) -> int:
    if step["arrived"] or step["finished"] or step["preempted"] or step["prefill"]:
        return 3
    if not step["decode"]:
        return 0
    if previous is None or len(previous["decode"]) != len(step["decode"]):
        return 2
    return 1


def _active_phases(step: dict) -> tuple[str, ...]:
    """Schedule lights up when the scheduler changed something (arrivals, admissions, preemptions,
    evictions, departures); the other three whenever the step ran a forward."""
    active = []
    admitted = any(e["start"] <= e["cached_tokens"] for e in step["prefill"])
    pages = step["pages"]
    if step["arrived"] or admitted or step["finished"] or step["preempted"] or pages["freed"] or pages["evicted"]:
        active.append("schedule")
    if step["prefill"] or step["decode"]:
        active += ["build_batch", "forward", "sample"]
    return tuple(active)


def _lane(snap: RequestSnapshot, step: dict) -> Lane:
    rid = snap.request_id
    progress = f"{snap.tokens_out}/{snap.tokens_target} tokens"
    if snap.state == "pending":
        label = "not arrived yet"
    elif snap.state == "waiting":
        label = "preempted, waiting" if rid in step["preempted"] else "waiting"
    elif snap.state == "prefill":
        entry = next(e for e in step["prefill"] if e["request_id"] == rid)
        cached = f", {entry['cached_tokens']} cached" if entry["cached_tokens"] else ""
        label = f"prefill {fmt.count(entry['num_tokens'], 'token')}{cached}"
    elif snap.state == "decode":
        draft = next((e for e in step.get("speculation", ()) if e["request_id"] == rid), None)
        run = f" · +{1 + draft['accepted']} ({draft['accepted']}/{draft['proposed']} drafted)" if draft else ""
        label = f"decoding{run} · {progress}"
    elif snap.state == "finished":
        label = f"finished ({snap.finish_reason}) · {fmt.count(snap.tokens_out, 'token')}"
    else:
        label = "left the batch"
    return Lane(rid, snap.state, snap.tokens_out, snap.tokens_target, label)


def _caption(step: dict) -> tuple[str, str]:
    drafts = step.get("speculation", ())
    decode = len(step["decode"])
    prefill_tokens = sum(e["num_tokens"] for e in step["prefill"])
    parts = []
    if decode:
        parts.append(fmt.count(decode, "decode token"))
    if drafts:
        proposed = sum(e["proposed"] for e in drafts)
        parts.append(f"{fmt.count(proposed, 'draft token')} ({sum(e['accepted'] for e in drafts)} accepted)")
    if prefill_tokens:
        parts.append(fmt.count(prefill_tokens, "prefill token"))
    caption = f"step {step['step']}: one forward · " + (" + ".join(parts) if parts else "idle")
    events = [f"{rid} arrives" for rid in step["arrived"]]
    events += [f"{rid} preempted" for rid in step["preempted"]]
    events += [f"{e['request_id']} leaves ({e['finish_reason']})" for e in step["finished"]]
    return caption, " · ".join(events)


def _loop_beat(trace: Trace, seconds: float) -> LoopBeat:
    phases = []
    for key, title in PHASE_TITLES.items():
        values = [s["phases_ms"][key] for s in trace.steps if key in s["phases_ms"]]
        phases.append(Phase(key, title, sum(values) / len(values) if values else None))
    forwards = [s["phases_ms"]["forward"] for s in trace.steps if "forward" in s["phases_ms"]]
    return LoopBeat(
        tuple(phases),
        sum(forwards) / len(forwards) if forwards else None,
        f"the Engine's background thread runs this loop — {fmt.thousands(len(trace.steps))} times in this trace",
        seconds,
    )


def throughput_beat(trace: Trace, seconds: float) -> ThroughputBeat:
    """The measured static vs continuous comparison, numbers straight from the trace."""
    tp = trace.throughput
    static, cont = tp["static"], tp["continuous"]
    return ThroughputBeat(
        float(static["tokens_per_s"]),
        float(cont["tokens_per_s"]),
        f"static\n{fmt.rate(static['tokens_per_s'])} tok/s",
        f"continuous\n{fmt.rate(cont['tokens_per_s'])} tok/s",
        f"continuous batching: {fmt.ratio(tp['ratio'])} the throughput of static batching",
        f"measured in this run on the same workload: {fmt.thousands(static['tokens'])} tokens in "
        f"{static['seconds']:.2f} s (static) vs {fmt.thousands(cont['tokens'])} tokens in {cont['seconds']:.2f} s",
        seconds,
    )


def batching_beats(trace: Trace, max_seconds: float | None = None) -> list[BatchingBeat]:
    """Loop intro, a sample of the real steps, then the measured throughput bar chart."""
    timing = plan_timing((4.0, 6.0), 1.0, DEFAULT_SECONDS if max_seconds is None else max_seconds)
    steps = trace.steps
    scores = [_score(s, steps[i - 1] if i else None) for i, s in enumerate(steps)]
    shown = sample_indices(scores, timing.max_steps)
    pages = replay_pages(trace)
    requests = replay_requests(trace, shown)
    window = min(trace.num_pages, MAX_MASK_PAGES)

    beats: list[BatchingBeat] = [_loop_beat(trace, timing.fixed[0])]
    previous = -1
    for i in shown:
        step = steps[i]
        caption, events = _caption(step)
        lanes = tuple(_lane(snap, step) for snap in list(requests[i].values())[:MAX_LANES])
        beats.append(
            BatchStepBeat(
                step=step["step"],
                skipped=i - previous - 1,
                active_phases=_active_phases(step),
                lanes=lanes,
                free_mask=tuple(state == FREE for state in pages[i].states[:window]),
                num_free_pages=step["num_free_pages"],
                num_pages=trace.num_pages,
                caption=caption,
                events=events,
                key=False,
                seconds=timing.per_step,
            )
        )
        previous = i
    _mark_key(beats)
    beats.append(throughput_beat(trace, timing.fixed[1]))
    return beats


def _mark_key(beats: list[BatchingBeat]) -> None:
    """The poster frame: the widest batch, best with a prefill joining and most requests seen."""
    candidates = [(i, b) for i, b in enumerate(beats) if isinstance(b, BatchStepBeat)]
    if not candidates:
        return

    def busy(item: tuple[int, BatchStepBeat]) -> tuple:
        _, b = item
        running = sum(1 for lane in b.lanes if lane.state in ("prefill", "decode"))
        seen = sum(1 for lane in b.lanes if lane.state != "pending")
        return running, "prefill" in {lane.state for lane in b.lanes}, seen, b.step

    index, beat = max(candidates, key=busy)
    beats[index] = replace(beat, key=True)
