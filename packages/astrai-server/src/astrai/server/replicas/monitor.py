"""What the replicas report about themselves, for `/health` and `/metrics`.

Each `refresh` asks every live replica for its status in parallel (a call pinned to that
replica, a few seconds at most): its pid and node, whether its engine runs, its engine stats.
A replica that does not answer is listed as unreachable. Between refreshes the last snapshot
is served, so `stats()` never blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import EngineStats
from astrai.server.replicas.board import ReplicaRef, live_replicas
from astrai.server.replicas.wire import PIN, ReplicaStatus
from ray import serve
from ray.serve.handle import DeploymentHandle

STATUS_TIMEOUT_S = 3.0


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


class ReplicaMonitor:
    """The replicas of one engine deployment, as they last reported."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._app_name = handle.app_name
        self._deployment = handle.deployment_name
        self._snapshot = _Snapshot()

    def live(self) -> tuple[ReplicaRef, ...] | None:
        """Replicas the router in this process can send to; None until it exists."""
        return live_replicas(self._app_name, self._deployment)

    def replicas(self) -> list[ReplicaView]:
        return list(self._snapshot.views)

    def stats(self) -> EngineStats:
        """The replicas' engine stats summed (as of the last `refresh`); KV usage averaged by pool size."""
        return sum_stats([s.stats for s in self._snapshot.statuses.values()])

    def replica_stats(self) -> dict[str, EngineStats]:
        """Each replica's own engine stats (as of the last `refresh`), by replica id."""
        return {name: s.stats for name, s in self._snapshot.statuses.items()}

    async def refresh(self) -> None:
        """Ask every live replica for its status (in parallel, a few seconds at most)."""
        live = self.live() or ()
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


async def _awaitable(call: Any) -> Any:
    return await call


def sum_stats(per_replica: Sequence[EngineStats]) -> EngineStats:
    """Counters and gauges summed; `kv_cache_usage` weighted by pool size; `page_size` kept."""
    total: dict[str, Any] = {key: 0 for key in EngineStats.__annotations__}
    total["requests_finished_total"] = {}
    for stats in per_replica:
        for key, value in stats.items():
            if isinstance(value, dict):
                merged = total.get(key)
                if not isinstance(merged, dict):  # a per-key count (finish reason, draft position)
                    merged = total[key] = {}
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            elif isinstance(value, (int, float)) and key not in ("kv_cache_usage", "page_size"):
                total[key] = total.get(key, 0) + value
    pages = sum(s["num_pages"] for s in per_replica)
    total["page_size"] = max((s["page_size"] for s in per_replica), default=0)
    total["kv_cache_usage"] = (sum(s["kv_cache_usage"] * s["num_pages"] for s in per_replica) / pages
                               if pages else 0.0)
    return EngineStats(**total)  # type: ignore[typeddict-item]
