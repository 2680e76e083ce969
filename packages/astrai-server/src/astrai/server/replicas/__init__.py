"""astrai.server.replicas: N engine replicas on Ray Serve behind one OpenAI endpoint.

`astrai serve --replicas N [--ray-address ADDR]` runs the single-process server's HTTP app in
its own process, in front of a `ReplicaSetEngine`: the engine interface forwarded to a Ray Serve
deployment of engine replicas, each request routed by prefix affinity (`affinity.py`, through
Ray Serve's request-router extension point in `router.py`). `serve_app.build_app` is the same
application for `serve run` and Serve config files.

Ray comes with the `astrai-server[ray]` extra and is imported only by the names that need it
(lazily here); one replica never imports it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astrai.server.replicas.affinity import AffinityPolicy, AffinityRule, PrefixIndex
    from astrai.server.replicas.http import REPLICA_HEADER, create_replica_app
    from astrai.server.replicas.launch import (
        ReplicaOptions,
        deploy_replica_set,
        engine_application,
        start_replica_set,
    )
    from astrai.server.replicas.monitor import ReplicaView
    from astrai.server.replicas.replica_set import ReplicaSetEngine
    from astrai.server.replicas.runtime import RayRuntime

_HOMES = {
    "AffinityPolicy": "affinity", "AffinityRule": "affinity", "PrefixIndex": "affinity",
    "REPLICA_HEADER": "http", "create_replica_app": "http",
    "ReplicaOptions": "launch", "deploy_replica_set": "launch", "engine_application": "launch",
    "start_replica_set": "launch",
    "ReplicaSetEngine": "replica_set", "ReplicaView": "monitor",
    "RayRuntime": "runtime",
}

__all__ = [
    "REPLICA_HEADER",
    "AffinityPolicy",
    "AffinityRule",
    "PrefixIndex",
    "RayRuntime",
    "ReplicaOptions",
    "ReplicaSetEngine",
    "ReplicaView",
    "create_replica_app",
    "deploy_replica_set",
    "engine_application",
    "start_replica_set",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"astrai.server.replicas.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'astrai.server.replicas' has no attribute {name!r}")
