"""StepTracer: gathers one step's page events and turns the step into a TraceEvent.

It listens to the KV cache manager all the time but records only while a step is traced, so
an engine with no trace subscribers pays one attribute check per cache event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from astrai.cache import PAGE_EVENT_KINDS, CacheEvent, KVCacheManager

from .request import Request
from .scheduler import Scheduler, StepPlan
from .trace import FinishedRecord, PrefillRecord, SpeculationRecord, TraceEvent

log = logging.getLogger("astrai.scheduler")

TraceCallback = Callable[[TraceEvent], None]


class StepTracer:
    def __init__(self, kv: KVCacheManager) -> None:
        self.kv = kv
        self.subscribers: tuple[TraceCallback, ...] = ()
        self._pages: dict[str, list[Any]] | None = None
        kv.subscribe(self._on_cache_event)

    @property
    def active(self) -> bool:
        return bool(self.subscribers)

    def begin_step(self) -> None:
        """Start collecting page events for the step about to run."""
        self._pages = {kind: [] for kind in PAGE_EVENT_KINDS}

    def _on_cache_event(self, event: CacheEvent) -> None:
        pages = self._pages
        if pages is not None:
            items = [list(p) for p in event.pages] if event.kind == "copied" else event.pages
            pages.setdefault(event.kind, []).extend(items)

    def end_step(
        self,
        step: int,
        plan: StepPlan,
        scheduler: Scheduler,
        arrivals: list[Request],
        finished: list[Request],
        phases_ms: dict[str, float],
    ) -> None:
        """Build the step's TraceEvent and hand it to every subscriber."""
        admitted = {r.request_id for r in plan.admitted}
        prefill: list[PrefillRecord] = []
        decode: list[str] = []
        speculation: list[SpeculationRecord] = []
        for c in plan.chunks:
            req = c.request
            if c.draft:
                decode.append(req.request_id)
                speculation.append(SpeculationRecord(request_id=req.request_id, proposed=len(c.draft),
                                                     accepted=c.accepted))
            elif c.end - c.start == 1 and c.start >= len(req.prompt_token_ids):
                decode.append(req.request_id)
            else:
                prefill.append(PrefillRecord(
                    request_id=req.request_id, num_tokens=c.end - c.start,
                    cached_tokens=req.num_cached_tokens if req.request_id in admitted else 0, start=c.start,
                ))
        kv = self.kv
        event = TraceEvent(
            step=step,
            time=time.monotonic(),
            phases_ms=phases_ms,
            prefill=prefill,
            decode=decode,
            arrived=[r.request_id for r in arrivals],
            finished=[
                FinishedRecord(request_id=r.request_id, finish_reason=r.finish_reason,
                               output_tokens=len(r.output_token_ids))
                for r in finished
            ],
            preempted=[r.request_id for r in plan.preempted],
            pages=self._pages or {},
            page_tables={r.request_id: list(kv.block_table(r.request_id)) for r in scheduler.running},
            speculation=speculation,
            num_waiting=len(scheduler.waiting),
            num_running=len(scheduler.running),
            num_free_pages=kv.num_free_pages(),
            num_cached_pages=kv.num_cached_pages(),
            num_pages=kv.num_pages,
        )
        self._pages = None
        for callback in self.subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("trace subscriber failed")
