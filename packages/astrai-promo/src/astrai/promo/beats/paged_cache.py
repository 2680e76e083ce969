"""Beats of the paged-cache scene: the real page pool, page tables, sharing, reuse, eviction."""

from __future__ import annotations

from dataclasses import dataclass

from ..replay import CACHED, FREE, USED, PageSnapshot, replay_pages
from ..sampling import plan_timing, sample_indices
from ..trace import Trace
from . import format as fmt

DEFAULT_SECONDS = 40.0
MAX_WINDOW = 64
MAX_TABLES = 8
# When a page has several events in one step, the most telling one is shown.
_FLASH_ORDER = ("evicted", "freed", "copied", "reused", "allocated", "shared")


@dataclass(frozen=True)
class PoolIntroBeat:
    num_pages: int
    page_size: int
    window: int  # pages [0, window) are drawn
    caption: str
    seconds: float


@dataclass(frozen=True)
class Cell:
    page: int
    state: str  # free | used | cached
    refcount: int  # running page tables holding it
    flash: str  # "" or the step's event on this page: allocated | shared | copied | reused | freed | evicted


@dataclass(frozen=True)
class TableRow:
    request_id: str
    pages: tuple[int, ...]
    shared: tuple[bool, ...]  # page held by more than one running request


@dataclass(frozen=True)
class PoolStepBeat:
    step: int
    skipped: int
    cells: tuple[Cell, ...]
    tables: tuple[TableRow, ...]
    caption: str
    events: str
    key: bool  # the poster frame: most pages shared at once
    seconds: float


@dataclass(frozen=True)
class PoolSummaryBeat:
    lines: tuple[str, ...]
    seconds: float


PagedCacheBeat = PoolIntroBeat | PoolStepBeat | PoolSummaryBeat


def _flashes(step: dict, snap: PageSnapshot) -> dict[int, str]:
    pages = step["pages"]
    marks: dict[str, set[int]] = {
        "evicted": set(pages["evicted"]),
        "freed": set(pages["freed"]),
        "copied": {dst for _src, dst in pages["copied"]},
        "reused": set(snap.reused),
        "allocated": set(pages["allocated"]),
        "shared": set(pages["shared"]),
    }
    flash: dict[int, str] = {}
    for kind in reversed(_FLASH_ORDER):
        for page in marks[kind]:
            flash[page] = kind
    return flash


def _score(step: dict, snap: PageSnapshot) -> int:
    pages = step["pages"]
    if pages["evicted"] or pages["copied"] or pages["shared"] or pages["freed"] or snap.reused:
        return 3
    return 2 if pages["allocated"] else 0


def _events(step: dict, snap: PageSnapshot) -> str:
    pages = step["pages"]
    parts = []
    fresh = [p for p in pages["allocated"] if p not in snap.reused]
    if fresh:
        parts.append(f"allocated {fmt.pages(fresh)}")
    if snap.reused:
        parts.append(f"reused {fmt.pages(sorted(snap.reused))}")
    if pages["shared"]:
        parts.append(f"shared prefix {fmt.pages(pages['shared'])}")
    if pages["copied"]:
        parts.append("copy-on-write " + ", ".join(f"{s}→{d}" for s, d in pages["copied"][:4]))
    if pages["freed"]:
        parts.append(f"freed {fmt.pages(pages['freed'])}")
    if pages["evicted"]:
        parts.append(f"evicted {fmt.pages(pages['evicted'])}")
    return " · ".join(parts)


def _summary(trace: Trace, snaps: list[PageSnapshot], seconds: float) -> PoolSummaryBeat:
    total = {kind: sum(len(s["pages"][kind]) for s in trace.steps) for kind in ("allocated", "shared", "freed", "evicted")}
    reused = sum(len(s.reused) for s in snaps)
    peak = max(s.states.count(USED) for s in snaps)
    max_ref = max(max(s.refcounts) for s in snaps)
    return PoolSummaryBeat(
        (
            f"pages allocated on demand: {fmt.thousands(total['allocated'])}, reused after a free: {fmt.thousands(reused)}",
            f"shared prefix pages: {fmt.thousands(total['shared'])} (up to {max_ref} requests on one page)",
            f"pages freed: {fmt.thousands(total['freed'])} · evicted from the prefix cache: {fmt.thousands(total['evicted'])}",
            f"peak use: {peak} of {trace.num_pages} pages of {trace.page_size} tokens",
        ),
        seconds,
    )


def paged_cache_beats(trace: Trace, max_seconds: float | None = None) -> list[PagedCacheBeat]:
    """Pool intro, a sample of the steps that touched pages, then the totals."""
    timing = plan_timing((4.0, 6.0), 1.0, DEFAULT_SECONDS if max_seconds is None else max_seconds)
    steps = trace.steps
    snaps = replay_pages(trace)
    window = min(trace.num_pages, MAX_WINDOW)
    shown = sample_indices([_score(s, snaps[i]) for i, s in enumerate(steps)], timing.max_steps)

    def sharing(i: int) -> tuple[int, int]:
        return sum(1 for r in snaps[i].refcounts if r > 1), snaps[i].states.count(USED)

    key = max(shown, key=lambda i: (*sharing(i), -i), default=None)
    shown_note = f"pages 0-{window - 1} of {trace.num_pages}" if window < trace.num_pages else f"all {trace.num_pages} pages"
    beats: list[PagedCacheBeat] = [
        PoolIntroBeat(
            trace.num_pages,
            trace.page_size,
            window,
            f"the KV page pool: {shown_note}, {trace.page_size} tokens each",
            timing.fixed[0],
        )
    ]
    previous = -1
    for i in shown:
        step, snap = steps[i], snaps[i]
        flash = _flashes(step, snap)
        cells = tuple(
            Cell(p, snap.states[p], snap.refcounts[p], flash.get(p, "")) for p in range(window)
        )
        tables = tuple(
            TableRow(rid, tuple(table), tuple(snap.refcounts[p] > 1 for p in table))
            for rid, table in list(step["page_tables"].items())[:MAX_TABLES]
        )
        caption = (
            f"step {step['step']}: {snap.states.count(USED)} in use · {snap.states.count(CACHED)} cached · "
            f"{snap.states.count(FREE)} free"
        )
        beats.append(PoolStepBeat(step["step"], i - previous - 1, cells, tables, caption, _events(step, snap),
                                  i == key, timing.per_step))
        previous = i
    beats.append(_summary(trace, snaps, timing.fixed[1]))
    return beats
