"""The live replica set, as the router in this process last saw it, for the front end in this process.

Ray Serve pickles the router's module by value into each handle's process, so the router
cannot share its own module globals with anything: it publishes here instead (this module is
imported normally on both sides). Readers get an immutable snapshot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaRef:
    """A replica the router can send to."""

    replica: str  # Ray Serve's replica id
    node_id: str


_LIVE: dict[tuple[str, str], tuple[ReplicaRef, ...]] = {}
_LOCK = threading.Lock()


def publish(app_name: str, deployment: str, replicas: tuple[ReplicaRef, ...]) -> None:
    with _LOCK:
        _LIVE[(app_name, deployment)] = replicas


def live_replicas(app_name: str, deployment: str) -> tuple[ReplicaRef, ...] | None:
    """The replicas of the deployment the router can route to; None before its router exists."""
    with _LOCK:
        return _LIVE.get((app_name, deployment))
