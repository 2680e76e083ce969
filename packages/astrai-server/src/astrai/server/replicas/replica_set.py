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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import EngineError, RequestOutput, SamplingParams
from astrai.server.errors import APIError
from astrai.server.replicas.board import ReplicaRef, live_replicas
from astrai.server.replicas.wire import AVOID, PIN, EngineDescription, ReplicaStatus, ReplicaTag
from ray import serve
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
)
from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("astrai.server")

STATUS_TIMEOUT_S = 3.0

# The replicas that served the current HTTP request, by engine request id (set by the header middleware).
SERVED_BY: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("astrai_served_by", default=None)

_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


@dataclass
class _Flight:
    """One request on its way through a replica."""

    request_id: str
    call: Any = None
    tag: ReplicaTag | None = None
    started: bool = False  # an output has been handed to the caller: no retry past this point
    aborted: bool = False


@dataclass
class ReplicaView:
    """One replica as `/health` shows it."""

    replica: str
    state: str  # "running" | "engine_stopped" | "unreachable"
    pid: int | None = None
    node_id: str | None = None
    num_running: int | None = None
    num_waiting: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Snapshot:
    statuses: dict[str, ReplicaStatus] = field(default_factory=dict)
    views: list[ReplicaView] = field(default_factory=list)
    taken_at: float = 0.0


class ReplicaSetEngine:
    """Engine-shaped front for N engine replicas behind one Ray Serve deployment handle."""

    def __init__(self, handle: DeploymentHandle, description: EngineDescription, *,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        self._app_name = handle.app_name
        self._deployment = handle.deployment_name
        self._on_shutdown = on_shutdown
        self.tokenizer = description.tokenizer
        self.config = description.config
        self.max_model_len = description.max_model_len
        self.max_num_seqs = description.max_num_seqs
        self._page_size = description.page_size
        self._flights: dict[str, _Flight] = {}
        self._snapshot = _Snapshot()
        self.retries_total = 0
        self.replica_deaths_seen = 0
        self._closed = False

    @classmethod
    def connect(cls, handle: DeploymentHandle, *, timeout_s: float = 600.0,
                on_shutdown: Callable[[], None] | None = None) -> ReplicaSetEngine:
        """Fetch the tokenizer and limits from one replica (blocking: call from a worker thread)."""
        description = handle.describe.remote().result(timeout_s=timeout_s)
        return cls(handle, description, on_shutdown=on_shutdown)

    # --- the engine interface ------------------------------------------------------------

    def generate_async(self, prompt: Sequence[int], params: SamplingParams | None = None,
                       request_id: str | None = None, priority: int = 0) -> AsyncIterator[RequestOutput]:
        """Deltas from whichever replica serves the request; cancelling or `abort` stops it there."""
        if self._closed:
            raise EngineError("the replica set has been shut down")
        if isinstance(prompt, str) or not prompt:
            raise ValueError("the replica set takes a non-empty list of prompt token ids")
        if not request_id:
            raise ValueError("the replica set needs a request_id (aborts and retries are keyed by it)")
        if request_id in self._flights:
            raise ValueError(f"request_id {request_id} is already in use")
        flight = _Flight(request_id)
        self._flights[request_id] = flight
        return self._run(flight, list(prompt), params if params is not None else SamplingParams())

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
        live = live_replicas(self._app_name, self._deployment)
        return None if live is None else len(live)

    def stats(self) -> dict[str, Any]:
        """The replicas' engine stats summed (as of the last `refresh`); KV usage averaged by pool size."""
        return sum_stats([s.stats for s in self._snapshot.statuses.values()])

    def replica_stats(self) -> dict[str, dict[str, Any]]:
        """Each replica's own engine stats (as of the last `refresh`), by replica id."""
        return {name: s.stats for name, s in self._snapshot.statuses.items()}

    def replicas(self) -> list[ReplicaView]:
        return list(self._snapshot.views)

    async def refresh(self) -> None:
        """Ask every live replica for its status (in parallel, a few seconds at most)."""
        live = live_replicas(self._app_name, self._deployment) or ()
        results = await asyncio.gather(*(self._status(ref) for ref in live))
        statuses: dict[str, ReplicaStatus] = {}
        views = []
        for ref, status in zip(live, results, strict=True):
            if status is None:
                views.append(ReplicaView(ref.replica, "unreachable", node_id=ref.node_id))
                continue
            statuses[ref.replica] = status
            views.append(ReplicaView(ref.replica, "running" if status.engine_alive else "engine_stopped",
                                     status.pid, status.node_id, int(status.stats.get("num_running", 0)),
                                     int(status.stats.get("num_waiting", 0))))
        self._snapshot = _Snapshot(statuses, views, time.monotonic())

    def deployment_status(self) -> dict[str, Any]:
        """The Serve controller's view of the engine deployment: its status and replicas by state
        (a replica being restarted shows here before it can be routed to). Blocking."""
        app = serve.status().applications.get(self._app_name)
        deployment = app.deployments.get(self._deployment) if app is not None else None
        if deployment is None:
            return {}
        return {"status": str(getattr(deployment.status, "value", deployment.status)),
                "replica_states": {str(getattr(k, "value", k)): n for k, n in deployment.replica_states.items()}}

    def shutdown(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        for flight in list(self._flights.values()):
            self.abort(flight.request_id)
        if self._on_shutdown is not None:
            self._on_shutdown()

    # --- internals -----------------------------------------------------------------------

    async def _status(self, ref: ReplicaRef) -> ReplicaStatus | None:
        call = self._handle.status.remote(**{PIN: ref.replica})
        try:
            return await asyncio.wait_for(_awaitable(call), STATUS_TIMEOUT_S)
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception:  # dead, restarting or too slow: reported as unreachable
            call.cancel()
            return None

    async def _run(self, flight: _Flight, prompt: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        avoid: list[str] = []
        try:
            for attempt in (1, 2):
                if flight.aborted:
                    yield _aborted(flight.request_id, prompt)
                    return
                if self.num_alive == 0:
                    raise APIError(503, "No engine replica is alive (Ray Serve is restarting them); retry shortly",
                                   code="no_replica_alive", headers={"Retry-After": "2"})
                flight.call = self._stream_handle.generate.remote(prompt, params, flight.request_id,
                                                                 **{AVOID: list(avoid)})
                try:
                    async for item in flight.call:
                        if isinstance(item, ReplicaTag):
                            flight.tag = item
                            _note_server(flight.request_id, item.replica)
                            continue
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
                    self.replica_deaths_seen += 1
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

    @staticmethod
    def _name(flight: _Flight) -> str:
        return flight.tag.replica if flight.tag is not None else "(unknown)"


def _note_server(request_id: str, replica: str) -> None:
    served = SERVED_BY.get()
    if served is not None:
        served[request_id] = replica


def _aborted(request_id: str, prompt: list[int]) -> RequestOutput:
    return RequestOutput(request_id=request_id, finished=True, finish_reason="abort", prompt_token_ids=prompt)


def _cause(exc: RayTaskError) -> BaseException:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return EngineError(f"an engine replica failed: {exc}")


async def _awaitable(call: Any) -> Any:
    return await call


def sum_stats(per_replica: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counters and gauges summed; `kv_cache_usage` weighted by pool size; `page_size` kept."""
    total: dict[str, Any] = {}
    for stats in per_replica:
        for key, value in stats.items():
            if isinstance(value, dict):
                merged = total.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            elif isinstance(value, (int, float)) and key not in ("kv_cache_usage", "page_size"):
                total[key] = total.get(key, 0) + value
    pages = sum(int(s.get("num_pages", 0)) for s in per_replica)
    if per_replica:
        total["page_size"] = max(int(s.get("page_size", 0)) for s in per_replica)
        total["kv_cache_usage"] = (sum(float(s.get("kv_cache_usage", 0.0)) * int(s.get("num_pages", 0))
                                       for s in per_replica) / pages) if pages else 0.0
    return total
