"""A generation's whole lifecycle: admit, start, stream or collect, abort on disconnect, clean up.

Chat, completions and the Responses API all run their engine work through here:

    run = await service.in_flight.start(request, Generation(...), slots, log)   # admitted and primed
    return run.stream(events)          # or: choices = await run.collect(request)

Everything that can leave work behind in the engine goes through `GenerationRun.close()`, which
cancels the consumer tasks, aborts unfinished engine requests, releases the admission slots and
fills the request log, once; so a client that goes away (streaming or not) frees its pages at once.
A client that left before the answer was ready ends as `ClientDisconnected`, which the app's
error handlers answer with 499 and mark `disconnected` in the request log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from astrai.scheduler import (
    EngineClient,
    EngineError,
    FieldError,
    GrammarError,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
)
from astrai.server.choice import ChoiceState
from astrai.server.errors import APIError, bad_request
from astrai.server.state import Admission
from astrai.server.usage import TokenUsage
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse

logger = logging.getLogger("astrai.server")

T = TypeVar("T")
OnFinish = Callable[[RequestMetrics | None, str | None], None]  # (metrics, finish_reason) of each choice


class ClientDisconnected(ClientDisconnect):
    """The HTTP client went away before the response was ready (answered 499, logged as disconnected)."""


def engine_error(exc: BaseException, constraint_param: str | None = None) -> APIError:
    """Errors the engine raises for a request: ValueError is the client's fault (400).

    A grammar that cannot be compiled is blamed on the field it came from (`constraint_param`).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GrammarError):
        param = constraint_param or "structured_outputs"
        return bad_request(f"{param}: {exc.detail}", param, code="invalid_schema")
    if isinstance(exc, FieldError):  # the engine's own checks name their field ("logit_bias")
        return bad_request(str(exc), exc.field)
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    if isinstance(exc, EngineError):
        return APIError(503, f"The engine is not accepting requests: {exc}", code="engine_unavailable")
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="engine_error")


def raise_if_failed(finish_reason: str | None, error: str | None) -> None:
    """A choice that ended by abort (shutdown) or an engine error becomes that HTTP error."""
    if finish_reason == "abort":
        raise APIError(503, "The request was aborted (the server is shutting down)", code="aborted")
    if finish_reason == "error":
        raise APIError(500, f"generation failed: {error or 'unknown engine error'}", code="engine_error")


class Generation:
    """The engine requests behind one HTTP request, consumed as `(choice_index, delta)` events."""

    def __init__(self, engine: EngineClient, request_id: str, prompts: list[list[int]], params: SamplingParams,
                 on_finish: OnFinish | None = None, constraint_param: str | None = None) -> None:
        self.engine = engine
        self.request_id = request_id
        self.engine_ids = [request_id if len(prompts) == 1 else f"{request_id}-{i}" for i in range(len(prompts))]
        self.n = params.n  # the engine runs n samples per prompt, sharing its pages
        self.choices = [ChoiceState(prompt_ids=list(p)) for p in prompts for _ in range(self.n)]
        self._params = params
        self._constraint_param = constraint_param
        self._queue: asyncio.Queue[tuple[int, RequestOutput | Exception]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._buffer: list[tuple[int, RequestOutput]] = []
        self._finished: set[int] = set()
        self._closed = False
        self._on_finish = on_finish

    def start(self) -> None:
        for i, engine_id in enumerate(self.engine_ids):
            prompt_ids = self.choices[i * self.n].prompt_ids
            self._tasks.append(asyncio.ensure_future(self._feed(i, engine_id, prompt_ids)))

    async def _feed(self, prompt_index: int, engine_id: str, prompt_ids: list[int]) -> None:
        base = prompt_index * self.n  # OpenAI numbers choices prompt-major: prompt i, sample j -> i * n + j
        try:
            async for out in self.engine.generate_async(prompt_ids, self._params, request_id=engine_id):
                self._queue.put_nowait((base + out.index, out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to the consumer, mapped to an HTTP status there
            self._queue.put_nowait((base, exc))

    async def prime(self) -> None:
        """Wait until every choice has produced something, so errors still become an HTTP status."""
        seen: set[int] = set()
        while len(seen) < len(self.engine_ids):
            index, item = await self._queue.get()
            if isinstance(item, Exception):
                raise engine_error(item, self._constraint_param)
            self._buffer.append((index, item))
            seen.add(index // self.n)

    async def events(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Yield deltas until every choice has finished; raises APIError on an engine error."""
        while len(self._finished) < len(self.choices):
            item: RequestOutput | Exception
            if self._buffer:
                index, item = self._buffer.pop(0)
            else:
                index, item = await self._queue.get()
            if isinstance(item, Exception):
                raise engine_error(item, self._constraint_param)
            self._apply(index, item)
            yield index, item

    def _apply(self, index: int, out: RequestOutput) -> None:
        choice = self.choices[index]
        choice.text += out.text or ""
        choice.token_ids.extend(out.token_ids or ())
        if out.logprobs:
            choice.logprobs.extend(out.logprobs)
        if out.num_cached_tokens:
            choice.num_cached_tokens = out.num_cached_tokens
        if out.prompt_logprobs is not None:
            choice.prompt_logprobs = out.prompt_logprobs
        if out.finished:
            self._finished.add(index)
            choice.finish_reason = out.finish_reason
            choice.metrics = out.metrics
            choice.error = out.error
            if self._on_finish is not None:
                self._on_finish(out.metrics, out.finish_reason)

    async def collect(self) -> list[ChoiceState]:
        async for _ in self.events():
            pass
        return self.choices

    @property
    def finished(self) -> bool:
        return len(self._finished) == len(self.choices)

    def abort_unfinished(self) -> int:
        """Ask the engine to abort unfinished requests; their final outputs still arrive. Returns how many."""
        pending = [engine_id for i, engine_id in enumerate(self.engine_ids)
                   if any(i * self.n + j not in self._finished for j in range(self.n))]
        for engine_id in pending:
            try:
                self.engine.abort(engine_id)
            except Exception:  # already gone: nothing to free
                pass
        return len(pending)

    def close(self) -> None:
        """Cancel consumers and abort unfinished engine requests. Synchronous: safe while cancelled."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.abort_unfinished() and self._on_finish is not None:  # one abort per unfinished choice
            for i in range(len(self.choices)):
                if i not in self._finished:
                    self._on_finish(None, "abort")  # counted here: their final outputs are not awaited


class EventStreamResponse(StreamingResponse):
    """Server-sent events that always run `cleanup` afterwards, even if the body was never iterated."""

    def __init__(self, content: AsyncIterator[str], cleanup: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cleanup()


class GenerationRun:
    """An admitted, started generation; `close()` (idempotent) ends it and gives its slots back."""

    def __init__(self, gen: Generation, in_flight: InFlight, slots: int, log: dict[str, Any]) -> None:
        self.gen = gen
        self._in_flight = in_flight
        self._slots = slots
        self._log = log
        self._released = False

    def close(self) -> None:
        """Close the generation and, once, release its slots and write its tokens into the request log."""
        self.gen.close()
        self._in_flight.forget(self.gen)
        if not self._released:
            self._released = True
            self._in_flight.admission.release(self._slots)
            summarize(self._log, self.gen)

    def stream(self, events: AsyncIterator[str]) -> EventStreamResponse:
        """Send `events` (built from `gen.events()`) as SSE; the run is closed when the stream ends."""
        return EventStreamResponse(events, self.close)

    async def collect(self, request: Request) -> list[ChoiceState]:
        """Every choice, finished; the run is closed either way. Raises ClientDisconnected if the
        client leaves first, APIError if a choice was aborted or failed."""
        try:
            choices = await until_disconnect(request, self.gen.collect())
        finally:
            self.close()
        for choice in choices:
            raise_if_failed(choice.finish_reason, choice.error)
        return choices


class InFlight:
    """The generations this app is running, bounded by its admission (429 when full)."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._active: set[Generation] = set()

    async def start(self, request: Request, gen: Generation, slots: int, log: dict[str, Any]) -> GenerationRun:
        """Take `slots` of admission, start `gen` and wait for its first output, so engine errors
        still become an HTTP status. Raises ClientDisconnected if the client left first (closed)."""
        self.admission.acquire(slots)
        run = GenerationRun(gen, self, slots, log)
        gen.start()
        self._active.add(gen)
        try:
            await until_disconnect(request, gen.prime())
        except BaseException:
            run.close()
            raise
        return run

    def forget(self, gen: Generation) -> None:
        self._active.discard(gen)

    def abort_all(self) -> int:
        """Abort every generation in flight (shutdown grace period over); each ends with a clean error."""
        count = sum(gen.abort_unfinished() for gen in list(self._active))
        if count:
            logger.warning("aborted %d in-flight request(s) at shutdown", count)
        return count


def summarize(log: dict[str, Any], gen: Generation) -> None:
    """Tokens and timings of a finished (or abandoned) generation, for the request log line."""
    choices = gen.choices
    counts = TokenUsage.of(choices)
    log["prompt_tokens"] = counts.prompt_tokens
    log["completion_tokens"] = counts.completion_tokens
    log["cached_tokens"] = counts.cached_tokens
    log["finish"] = ",".join(c.finish_reason or "abort" for c in choices)
    metrics = choices[0].metrics
    if metrics is not None:
        for name, value in (("queue_time", metrics.queue_time), ("ttft", metrics.ttft),
                            ("e2e_latency", metrics.e2e_latency)):
            if value is not None:
                log[name] = float(value)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (call only after the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, but give up with ClientDisconnected as soon as the client goes away."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected()
