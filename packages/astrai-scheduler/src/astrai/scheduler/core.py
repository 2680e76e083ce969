"""EngineCore: the engine thread, its mailbox, and one step of the loop.

Caller threads hand requests and aborts to the mailbox (`submit`, `abort`); the engine thread
takes them at the start of each step and runs schedule -> build batch -> forward -> sample,
then releases what finished. Outputs leave through each request's sink. The thread sleeps on
a condition variable when there is no work.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable

from astrai.cache import KVCacheManager
from astrai.model import Tokenizer

from .errors import EngineError
from .outputs import RequestOutput
from .request import Request
from .runner import ModelRunner
from .sampler import SampleResult
from .scheduler import Chunk, Scheduler, StepPlan
from .speculation import Speculator
from .stats import EngineCounters
from .timing import StepTimer
from .tracing import StepTracer, TraceCallback

log = logging.getLogger("astrai.scheduler")

# How long interpreter exit waits for an engine's current step before giving up on it.
_EXIT_JOIN_SECONDS = 60.0

_live_cores: weakref.WeakSet[EngineCore] = weakref.WeakSet()


@atexit.register
def _shutdown_live_cores() -> None:
    """Stop every engine thread before the interpreter finalizes.

    The engine thread is a daemon. Left running at exit, it would be killed when it next took the
    GIL, often inside a torch call, and that unwinding through C++ aborts the whole process
    (SIGABRT, "terminate called without an active exception") instead of letting it exit 0.
    """
    for core in list(_live_cores):
        core.shutdown(_EXIT_JOIN_SECONDS)



class EngineCore:
    """Owns the engine thread. Thread-safe: submit, abort, subscribe, new_request_id, wait_idle, shutdown."""

    def __init__(self, scheduler: Scheduler, runner: ModelRunner, kv: KVCacheManager, tokenizer: Tokenizer,
                 *, enable_prefix_cache: bool, speculator: Speculator | None = None) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.kv = kv
        self.tokenizer = tokenizer
        self.enable_prefix_cache = enable_prefix_cache
        self.speculator = speculator
        self.counters = EngineCounters()
        self.tracer = StepTracer(kv)

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # wakes the engine thread
        self._idle_cond = threading.Condition(self._lock)  # wakes wait_idle() callers
        self._idle = False
        self._inbox: list[Request] = []
        self._aborts: list[str] = []
        self._live: set[str] = set()
        self._closed = False
        self._ids = itertools.count()
        self._arrivals = itertools.count()
        self._thread = threading.Thread(target=self._run, name="astrai-engine", daemon=True)
        self._thread.start()
        _live_cores.add(self)

    # --- caller threads -----------------------------------------------------------------

    def new_request_id(self) -> str:
        with self._lock:
            request_id = f"req-{next(self._ids)}"
            while request_id in self._live:  # a caller chose this name for its own request
                request_id = f"req-{next(self._ids)}"
            return request_id

    def submit(self, reqs: list[Request]) -> None:
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise EngineError("the engine has been shut down")
            ids = [r.request_id for r in reqs]
            dup = next((i for i in ids if i in self._live), None)
            if dup is not None or len(set(ids)) != len(ids):
                raise ValueError(f"request_id {dup or ids} is already in use")
            for r in reqs:
                r.arrival_seq = next(self._arrivals)
                self._live.add(r.request_id)
            self._inbox.extend(reqs)
            self._cond.notify()

    def abort(self, request_id: str) -> None:
        with self._cond:
            if request_id in self._live:
                self._aborts.append(request_id)
                self._cond.notify()

    def subscribe(self, callback: TraceCallback) -> Callable[[], None]:
        """Add a trace subscriber (called on the engine thread); returns the function that removes it."""
        tracer = self.tracer
        with self._lock:
            tracer.subscribers = (*tracer.subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                tracer.subscribers = tuple(s for s in tracer.subscribers if s is not callback)

        return unsubscribe

    @property
    def num_inbox(self) -> int:
        return len(self._inbox)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not (self._idle and not self._inbox and not self._aborts) and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle_cond.wait(left)
            return True

    def shutdown(self, timeout: float | None) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._inbox or self._aborts or self._closed or self.scheduler.has_work()):
                        self._idle = True
                        self._idle_cond.notify_all()
                        self._cond.wait()
                    self._idle = False
                    if self._closed:
                        break
                    arrivals, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                self._step(arrivals, aborts)
        except BaseException as exc:  # a bug: fail everyone rather than hang callers
            log.exception("engine thread crashed")
            self._drain(f"engine thread crashed: {type(exc).__name__}: {exc}")
            raise
        self._drain(None)

    def _drain(self, error: str | None) -> None:
        """Finish every request still in the engine (shutdown or crash)."""
        with self._cond:
            self._closed = True
            pending, self._inbox = self._inbox, []
        reason = "error" if error else "abort"
        for req in pending:
            self._finish(req, reason, error)
        for req in [*self.scheduler.waiting, *self.scheduler.running]:
            self.scheduler.remove(req.request_id)
            self._finish(req, reason, error)
        with self._lock:
            self._idle = True
            self._idle_cond.notify_all()

    def _step(self, arrivals: list[Request], aborts: list[str]) -> None:
        tracing = self.tracer.active
        if tracing:
            self.tracer.begin_step()
        timer = StepTimer()
        sched = self.scheduler
        finished: list[Request] = []

        for rid in aborts:
            req = sched.remove(rid)
            if req is None:
                req = next((r for r in arrivals if r.request_id == rid), None)
                if req is None:
                    continue
                arrivals.remove(req)
            self._finish(req, "abort")
            finished.append(req)
        for req in arrivals:
            sched.add(req)
        plan = sched.schedule()
        now = time.monotonic()
        for req in plan.admitted:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
                self.counters.prompt_tokens_total += len(req.prompt_token_ids)
        for req, message in plan.failed:
            self._finish(req, "error", message)
            finished.append(req)
        if self.speculator is not None and plan.chunks:
            self.speculator.extend(plan, sched)
        timer.lap("schedule")

        if plan.chunks:
            try:
                batch = self.runner.build_batch(plan.chunks)
                timer.lap("build_batch")
                logits = self.runner.forward(batch)
                timer.lap("forward")
                self._apply(plan, self.runner.sample(logits, plan.chunks), finished)
            except Exception as exc:  # fail this step's requests; the loop keeps serving
                log.exception("engine step failed")
                message = f"engine step failed: {type(exc).__name__}: {exc}"
                for c in plan.chunks:
                    if c.request.finished:
                        continue
                    sched.release_failed(c.request)
                    self._finish(c.request, "error", message)
                    finished.append(c.request)
            timer.lap("sample")

        for req in finished:  # pages of finished requests: full ones to the prefix cache, rest freed
            if req in sched.running:
                sched.release(req)
        timer.lap("schedule")
        self.counters.steps += 1
        if self.speculator is not None and plan.chunks and all(_decodes(c) for c in plan.chunks):
            self.speculator.observe_step(plan.num_tokens, sum(timer.ms.values()))
        if tracing:
            self.tracer.end_step(self.counters.steps - 1, plan, sched, arrivals, finished, timer.ms)

    def _apply(self, plan: StepPlan, result: SampleResult, finished: list[Request]) -> None:
        """Advance every chunk's request, append sampled tokens, hand out outputs.

        Requests that finish are appended to `finished` as they go, so a failure halfway
        leaves a consistent list.
        """
        now = time.monotonic()
        tokens = result.token_ids
        logprobs = result.logprobs
        k = 0
        for c in plan.chunks:
            req = c.request
            req.num_computed = c.end
            if not c.sample:
                continue
            if self.enable_prefix_cache and c.start < len(req.prompt_token_ids):
                self.kv.commit(req.request_id, req.token_slice(0, c.end))  # share the prompt now
            if c.draft:
                rows = len(c.draft) + 1
                self.counters.generation_tokens_total += self._verify(
                    c, tokens[k : k + rows], logprobs[k : k + rows] if logprobs is not None else None, now)
                k += rows
            else:
                req.append_token(tokens[k], logprobs[k] if logprobs is not None else None, now)
                k += 1
                self.counters.generation_tokens_total += 1
            if req.finished:
                self._finish(req)
                finished.append(req)
            elif req.stream:
                self._deliver(req, req.take_delta())

    def _verify(self, c: Chunk, sampled: list[int], logprobs: list | None, now: float) -> int:
        """Append the target's tokens of a verification chunk while they equal the draft (the
        first that differs, or the one after the whole draft, is appended too); give back the
        rejected positions' pages. Returns how many tokens were appended."""
        req, draft = c.request, c.draft
        appended = 0
        for j, token in enumerate(sampled):
            if req.constraint is not None:
                req.constraint.prepare(req.tokens_left)  # as the sampler does before each decoded token
            req.append_token(token, logprobs[j] if logprobs is not None else None, now)
            appended += 1
            if req.finished or j == len(draft) or token != draft[j]:
                break
        matched = 0
        while matched < min(appended, len(draft)) and sampled[matched] == draft[matched]:
            matched += 1
        c.accepted = matched
        req.num_computed = c.start + appended  # the last appended token's K/V is written next step
        self.kv.truncate(req.request_id, req.num_computed)
        assert self.speculator is not None
        self.speculator.settle(req, len(draft), matched)
        return appended

    def _finish(self, req: Request, reason: str | None = None, error: str | None = None) -> None:
        """Hand out a request's last output; with `reason`, end it first (abort, error).

        Without `reason` the request has already ended itself (a stop or its length limit).
        """
        if reason is not None:
            req.finish(reason, error)
        if self.speculator is not None:
            self.speculator.finish(req)
        if not req.uses_detokenizer:
            ids = req.output_token_ids
            if req.finish_reason == "stop" and isinstance(req.stop_reason, int):
                ids = ids[:-1]  # the stop token's text is not part of the output
            req.set_final_text(self.tokenizer.decode(ids, skip_special_tokens=req.params.skip_special_tokens))
        by_reason = self.counters.finished_by_reason
        by_reason[req.finish_reason or "stop"] = by_reason.get(req.finish_reason or "stop", 0) + 1
        with self._cond:
            self._live.discard(req.request_id)
        self._deliver(req, req.take_delta() if req.stream else req.final_output())

    def _deliver(self, req: Request, out: RequestOutput) -> None:
        if req.sink is None:
            return
        try:
            req.sink(out)
        except Exception:  # e.g. the caller's event loop is gone: nobody is listening
            log.debug("dropping output of %s: its consumer is gone", req.request_id, exc_info=True)
            if not req.finished:
                self.abort(req.request_id)


def _decodes(c: Chunk) -> bool:
    """A chunk that only decodes: one token, or a verification chunk (no prefill in it)."""
    return c.sample and c.end - c.start == 1 + len(c.draft)
