"""Replay a trace step by step to know the pool and the requests *after* every step.

Scenes show only a sample of the steps, so the state they draw must come from replaying all
of them: a skipped step still allocated its pages and still produced its tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .trace import Trace

FREE, USED, CACHED = "free", "used", "cached"


@dataclass(frozen=True)
class PageSnapshot:
    """The page pool after one step: every page's state and how many running tables hold it."""

    states: tuple[str, ...]  # FREE | USED | CACHED per page
    refcounts: tuple[int, ...]  # number of running page tables holding the page
    reused: frozenset[int]  # pages allocated this step that had been released earlier

    @property
    def num_free(self) -> int:
        return self.states.count(FREE)

    @property
    def num_cached(self) -> int:
        return self.states.count(CACHED)


@dataclass(frozen=True)
class RequestSnapshot:
    """One request after one step."""

    request_id: str
    state: str  # "pending" (not arrived) | "waiting" | "prefill" | "decode" | "finished" | "gone"
    tokens_out: int  # generated so far
    tokens_target: int  # the request's final output length
    finish_reason: str | None = None


def replay_pages(trace: Trace) -> list[PageSnapshot]:
    """Page pool snapshots, one per step.

    A page is USED while some running request's page table holds it (from the event itself),
    FREE once freed or evicted and not allocated again, and CACHED otherwise: it was written,
    its request let go of it, and the prefix cache kept it. Within one step the engine evicts
    just before it allocates, and frees (prefix-cache dedup, finished requests) after its
    forward, so events are applied in that order: evicted, then allocated, then freed.
    """
    num_pages = trace.num_pages
    free = set(range(num_pages))
    released_before: set[int] = set()
    snapshots = []
    for step in trace.steps:
        pages = step["pages"]
        released = set(pages["freed"]) | set(pages["evicted"])
        taken = set(pages["allocated"]) | {dst for _src, dst in pages["copied"]}
        free |= set(pages["evicted"])
        free -= taken
        free |= set(pages["freed"])
        reused = frozenset(taken & released_before)
        released_before |= released
        refcounts = [0] * num_pages
        for table in step["page_tables"].values():
            for page in table:
                if 0 <= page < num_pages:
                    refcounts[page] += 1
        states = tuple(
            USED if refcounts[p] else FREE if p in free else CACHED for p in range(num_pages)
        )
        snapshots.append(PageSnapshot(states, tuple(refcounts), reused))
    return snapshots


def replay_requests(trace: Trace, at: Iterable[int] | None = None) -> dict[int, dict[str, RequestSnapshot]]:
    """Request snapshots after the steps at indices `at` (default: all), keyed by step index,
    then by request id in the trace's request order.

    Tokens generated are counted from the events: one per decode entry plus the draft tokens a
    speculative verification accepted in that step, one when a prefill chunk reaches the end of
    the prompt. The finished event's own count wins when it arrives.
    """
    targets = {r["request_id"]: int(r["output_tokens"]) for r in trace.requests}
    prompt_lens = {r["request_id"]: int(r["prompt_tokens"]) for r in trace.requests}
    order = [r["request_id"] for r in trace.requests]
    state = dict.fromkeys(order, "pending")
    tokens = dict.fromkeys(order, 0)
    reasons: dict[str, str | None] = dict.fromkeys(order)
    wanted = set(range(len(trace.steps)) if at is None else at)
    snapshots: dict[int, dict[str, RequestSnapshot]] = {}
    finished_last_step: list[str] = []
    for index, step in enumerate(trace.steps):
        for rid in finished_last_step:
            state[rid] = "gone"
        finished_last_step = [e["request_id"] for e in step["finished"] if e["request_id"] in state]
        for rid in step["arrived"]:
            if rid in state and state[rid] == "pending":
                state[rid] = "waiting"
        for rid in step["preempted"]:
            if rid in state:
                state[rid] = "waiting"
        for entry in step["prefill"]:
            rid = entry["request_id"]
            if rid not in state:
                continue
            state[rid] = "prefill"
            if entry["start"] + entry["num_tokens"] >= prompt_lens[rid]:
                tokens[rid] += 1
        accepted = {e["request_id"]: e["accepted"] for e in step.get("speculation", ())}
        for rid in step["decode"]:
            if rid in state:
                state[rid] = "decode"
                tokens[rid] += 1 + accepted.get(rid, 0)
        for entry in step["finished"]:
            rid = entry["request_id"]
            if rid not in state:
                continue
            state[rid] = "finished"
            reasons[rid] = entry["finish_reason"]
            if entry["output_tokens"] is not None:
                tokens[rid] = int(entry["output_tokens"])
        if index in wanted:
            snapshots[index] = {
                rid: RequestSnapshot(rid, state[rid], tokens[rid], targets[rid], reasons[rid]) for rid in order
            }
    return snapshots
