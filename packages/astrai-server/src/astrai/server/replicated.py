"""The optional seam of an engine made of replicas (`astrai.server.replicas` implements it).

The server serves any `EngineClient`; when the engine is also a `ReplicatedEngine`, `/health`
lists its replicas (503 with Retry-After when none is running), `/metrics` asks the replicas for
fresh numbers first and labels the engine families per replica. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from astrai.scheduler import EngineStats


@dataclass(frozen=True)
class ReplicaCounts:
    """What only a set of replicas has to count."""

    running: int  # replicas serving now
    retries_total: int  # requests sent again because their replica died before they started


@dataclass(frozen=True)
class ReplicaHealth:
    """`/health` of a replica set: whether any replica serves, and what to show about each."""

    serving: bool
    replicas: list[dict[str, Any]]  # {"replica", "state", "pid", "node_id", "num_running", "num_waiting"}
    deployment: dict[str, Any]  # the orchestrator's view: status and replica counts by state


@runtime_checkable
class ReplicatedEngine(Protocol):
    """An engine made of replicas: stats per replica, and a health report, refreshed on demand."""

    async def refresh(self) -> None:
        """Ask the replicas for their status now (bounded time); the methods below read the result."""

    def replica_stats(self) -> Mapping[str, EngineStats]: ...

    def replica_counts(self) -> ReplicaCounts: ...

    async def health(self) -> ReplicaHealth: ...
