"""`ReplicaSetEngine`: the engine interface the server uses, over a deployment of engine replicas.

The HTTP app, its handlers, validation and errors are the single-process server's own code;
only the engine behind them is this stand-in, which forwards each request to a replica through
a Ray Serve deployment handle (the prefix-aware router picks which) and streams the replica's
`RequestOutput` deltas back unchanged.

Faults: when a replica dies, a request that had produced no output yet is sent once more, to
another replica; one that had produced output ends with an `EngineError` (the handlers turn it
into a 503 error event and `[DONE]`). With no replica alive a request gets 503 and Retry-After
at once. `abort` cancels the replica call (Ray Serve cancels it inside the replica, which
aborts the engine request) and ends the stream with a final "abort" output, as the engine does.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from astrai.scheduler import EngineError, EngineInfo, EngineStats, RequestOutput, SamplingParams, TraceEvent
from astrai.server.errors import APIError
from astrai.server.replicas.affinity import PrefixIndex
from astrai.server.replicas.monitor import ReplicaMonitor
from astrai.server.replicas.wire import AVOID, EngineDescription, ReplicaTag
from astrai.server.replicated import ReplicaCounts, ReplicaHealth
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
)
from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("astrai.server")

Prompt = str | Sequence[int]
Sink = Callable[[RequestOutput], None]
TraceCallback = Callable[[TraceEvent], None]

# The replicas that served the current HTTP request, by engine request id (set by the header middleware).
SERVED_BY: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("astrai_served_by", default=None)

NO_REPLICA_POLL_S = 0.25
_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


@dataclass
class _Flight:
    """One request on its way through a replica."""

    request_id: str
    call: Any = None
    tag: ReplicaTag | None = None
    started: bool = False  # an output has been handed to the caller: no retry past this point
    aborted: bool = False


class ReplicaSetEngine:
    """Engine-shaped front for N engine replicas behind one Ray Serve deployment handle."""

    def __init__(self, handle: DeploymentHandle, description: EngineDescription, *, num_replicas: int,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        self._on_shutdown = on_shutdown
        self.tokenizer = description.tokenizer
        self.config = description.config
        self._info = description.info
        self.max_model_len = description.info.max_model_len
        self.num_replicas = num_replicas
        self.max_num_seqs = description.info.max_num_seqs * num_replicas  # one batch per replica
        self._flights: dict[str, _Flight] = {}
        self.monitor = ReplicaMonitor(handle)
        self.retries_total = 0
        self._sent = PrefixIndex()  # the prompts each replica was sent: lookup_prefix's view of their caches
        self._closed = False
        self._pumps: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(cls, handle: DeploymentHandle, *, num_replicas: int, timeout_s: float = 600.0,
                on_shutdown: Callable[[], None] | None = None) -> ReplicaSetEngine:
        """Fetch the tokenizer and limits from one replica (blocking: call from a worker thread)."""
        description = handle.describe.remote().result(timeout_s=timeout_s)
        return cls(handle, description, num_replicas=num_replicas, on_shutdown=on_shutdown)

    # --- the engine interface ------------------------------------------------------------

    def generate_async(self, prompt: Prompt, params: SamplingParams | None = None,
                       request_id: str | None = None, priority: int = 0) -> AsyncIterator[RequestOutput]:
        """Deltas from whichever replica serves the request; cancelling or `abort` stops it there.

        Bad input raises here, synchronously, as the engine's does."""
        flight, ids = self._open(prompt, request_id)
        return self._run(flight, ids, params if params is not None else SamplingParams(), stream=True,
                         priority=priority)

    def add_request(self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    priority: int = 0, *, sink: Sink | None = None, stream: bool = False) -> str:
        """Start a request from inside the running event loop; `sink` gets its deltas (`stream`) or
        the one final output, as from the engine. A failure ends it with finish_reason "error"."""
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop: replies arrive on one
        flight, ids = self._open(prompt, request_id)
        outputs = self._run(flight, ids, params if params is not None else SamplingParams(), stream=stream,
                            priority=priority)

        async def pump() -> None:
            try:
                async for out in outputs:
                    if sink is not None:
                        sink(out)
            except Exception as exc:  # reported the way the engine reports a failed request
                if sink is not None:
                    sink(RequestOutput(request_id=flight.request_id, finished=True, finish_reason="error",
                                       prompt_token_ids=ids, error=f"{type(exc).__name__}: {exc}"))

        self._pumps.add(task := loop.create_task(pump()))
        task.add_done_callback(self._pumps.discard)
        return flight.request_id

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Run prompts to completion across the replicas, in input order. Blocking: not from an event loop."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        batch = list(prompts)  # type: ignore[arg-type]
        plist = list(params) if isinstance(params, Sequence) else [params] * len(batch)
        if len(plist) != len(batch):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(batch)} prompts")
        opened = [self._open(p, None) for p in batch]

        async def final(flight: _Flight, ids: list[int], sp: SamplingParams | None) -> RequestOutput:
            outs = [out async for out in self._run(flight, ids, sp or SamplingParams(), stream=False)]
            return outs[-1]

        async def run_all() -> list[RequestOutput]:
            return list(await asyncio.gather(*(final(f, ids, sp) for (f, ids), sp in zip(opened, plist, strict=True))))

        return asyncio.run(run_all())

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is in flight here and every replica reports nothing running or waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            asyncio.run(self.refresh())
            busy = any(int(stats.get("num_running", 0)) or int(stats.get("num_waiting", 0))
                       for stats in self.replica_stats().values())
            if not self._flights and not busy:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def lookup_prefix(self, token_ids: Sequence[int]) -> int:
        """The longest prefix of `token_ids` (whole routing blocks) some replica was sent: the prefix-aware
        router sends a prompt there, so it stands for that replica's cache (which may have evicted it)."""
        matched = self._sent.match(token_ids, self._sent.replicas())
        return min(max(matched.values(), default=0), max(0, len(token_ids) - 1))

    def subscribe(self, callback: TraceCallback) -> Callable[[], None]:
        raise NotImplementedError("step traces stay inside each replica's process; subscribe to an Engine "
                                  "directly (e.g. `astrai serve` with one replica) to record one")

    def abort(self, request_id: str) -> None:
        flight = self._flights.get(request_id)
        if flight is None:
            return
        flight.aborted = True
        if flight.call is not None:
            flight.call.cancel()

    @property
    def num_alive(self) -> int | None:
        """Replicas the router can send to now; None until the router exists."""
        live = self.monitor.live()
        return None if live is None else len(live)

    def stats(self) -> EngineStats:
        """The replicas' engine stats summed (as of the last `refresh`); KV usage averaged by pool size."""
        return self.monitor.stats()

    def replica_stats(self) -> dict[str, EngineStats]:
        """Each replica's own engine stats (as of the last `refresh`), by replica id."""
        return self.monitor.replica_stats()

    def replica_counts(self) -> ReplicaCounts:
        """Replicas running (as of the last `refresh`) and requests retried after a replica died."""
        return ReplicaCounts(running=sum(1 for v in self.monitor.replicas() if v.state == "running"),
                             retries_total=self.retries_total)

    def describe(self) -> EngineInfo:
        """How each replica's engine is set up (as one replica reported it at start-up)."""
        return self._info

    async def refresh(self) -> None:
        await self.monitor.refresh()

    async def health(self) -> ReplicaHealth:
        """Every live replica's state and pid (asked now), and the Serve controller's counts by state."""
        await self.monitor.refresh()
        views = self.monitor.replicas()
        try:
            deployment = await asyncio.to_thread(self.monitor.deployment_status)
        except Exception as exc:  # the controller is unreachable: say so rather than fail the probe
            deployment = {"error": f"{type(exc).__name__}: {exc}"}
        return ReplicaHealth(serving=any(v.state == "running" for v in views),
                             replicas=[v.to_dict() for v in views], deployment=deployment)

    def shutdown(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        for flight in list(self._flights.values()):
            self.abort(flight.request_id)
        if self._on_shutdown is not None:
            self._on_shutdown()

    # --- internals -----------------------------------------------------------------------

    def _open(self, prompt: Prompt, request_id: str | None) -> tuple[_Flight, list[int]]:
        if self._closed:
            raise EngineError("the replica set has been shut down")
        if isinstance(prompt, str):
            ids = list(self.tokenizer.encode(prompt, add_special_tokens=True))  # as the engine does
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError("prompt is empty")
        if request_id is None:
            request_id = f"req-{uuid.uuid4().hex}"
        elif not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        if request_id in self._flights:
            raise ValueError(f"request_id {request_id} is already in use")
        flight = _Flight(request_id)
        self._flights[request_id] = flight
        return flight, ids

    async def _run(self, flight: _Flight, prompt: list[int], params: SamplingParams, *, stream: bool,
                   priority: int = 0) -> AsyncIterator[RequestOutput]:
        avoid: list[str] = []
        try:
            for attempt in (1, 2):
                if flight.aborted:
                    yield _aborted(flight.request_id, prompt)
                    return
                if self.num_alive == 0:
                    raise _no_replica()
                flight.call = self._stream_handle.generate.remote(prompt, params, flight.request_id, stream,
                                                                 priority, **{AVOID: list(avoid)})
                try:
                    flight.tag = await self._tag(flight.call)
                    _note_server(flight.request_id, flight.tag.replica)
                    self._sent.insert(flight.tag.replica, prompt)
                    async for item in flight.call:
                        for out in item:
                            flight.started = True
                            if out.finished:
                                flight.call = None  # done on the replica: nothing to cancel
                            yield out
                            if out.finished:
                                return
                    raise EngineError(f"replica {self._name(flight)} ended the stream without a final output")
                except TaskCancelledError:  # our own cancel (abort); an asyncio cancellation propagates
                    if not flight.aborted:
                        raise
                    flight.call = None
                    yield _aborted(flight.request_id, prompt)
                    return
                except RayTaskError as exc:  # the replica raised: surface its own exception
                    raise _cause(exc) from None
                except _REPLICA_GONE as exc:
                    flight.call = None
                    if flight.started or flight.aborted or attempt == 2:
                        what = "while the request was generating" if flight.started else "twice in a row"
                        raise EngineError(f"engine replica {self._name(flight)} died {what} "
                                          f"({type(exc).__name__})") from None
                    if flight.tag is not None:
                        avoid.append(flight.tag.replica)
                    self.retries_total += 1
                    logger.warning("engine replica %s died before request %s started; retrying it elsewhere",
                                   self._name(flight), flight.request_id)
                    flight.tag = None
        finally:
            if flight.call is not None:
                flight.call.cancel()  # the caller stopped early: free the request on the replica
            self._flights.pop(flight.request_id, None)

    async def _tag(self, call: Any) -> ReplicaTag:
        """The stream's first item; while it is awaited, Ray may hold the call until some replica is up:
        if the router is left with none, give up with 503 instead of keeping the client waiting."""
        first = asyncio.ensure_future(call.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({first}, timeout=NO_REPLICA_POLL_S)
                if done:
                    tag = first.result()
                    if not isinstance(tag, ReplicaTag):
                        raise EngineError(f"an engine replica answered {type(tag).__name__} before its tag")
                    return tag
                if self.num_alive == 0:
                    call.cancel()
                    raise _no_replica()
        finally:
            first.cancel()

    @staticmethod
    def _name(flight: _Flight) -> str:
        return flight.tag.replica if flight.tag is not None else "(unknown)"


def _note_server(request_id: str, replica: str) -> None:
    served = SERVED_BY.get()
    if served is not None:
        served[request_id] = replica


def _no_replica() -> APIError:
    return APIError(503, "No engine replica is alive (Ray Serve is restarting them); retry shortly",
                    code="no_replica_alive", headers={"Retry-After": "2"})


def _aborted(request_id: str, prompt: list[int]) -> RequestOutput:
    return RequestOutput(request_id=request_id, finished=True, finish_reason="abort", prompt_token_ids=prompt)


def _cause(exc: RayTaskError) -> BaseException:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return EngineError(f"an engine replica failed: {exc}")
