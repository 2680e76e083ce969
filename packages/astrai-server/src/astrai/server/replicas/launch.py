"""Putting it together: the options of a replica set, the Serve application, and the front end's start.

`engine_application(...)` is the Ray Serve application of the engine replicas (used by
`astrai serve --replicas N` and by the `serve run` builder); `deploy_replica_set(...)` deploys
it on a started `RayRuntime` and returns the `ReplicaSetEngine` the HTTP app serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import kv_budget_bytes
from astrai.server.config import ServerConfig
from astrai.server.replicas.deployment import cpus_per_replica, engine_deployment
from astrai.server.replicas.replica_set import ReplicaSetEngine
from astrai.server.replicas.runtime import APP_NAME, RayRuntime, kv_share
from astrai.server.replicas.wire import EngineSpec
from ray.serve.deployment import Application

logger = logging.getLogger("astrai.server")

ROUTING_POLICIES = ("prefix", "round-robin")
# Calls Ray Serve lets one replica hold at once: no real limit, since the front end's admission
# answers 429 first (batch per replica x replicas + --max-queue) and a replica queues what it is sent.
REPLICA_MAX_ONGOING = 100_000


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas, where, and how requests are spread over them."""

    replicas: int = 2
    ray_address: str | None = None  # None: start a local Ray instance (and stop it on exit)
    cpus_per_replica: float | None = None  # None: an equal share of the cluster's CPUs
    routing: str = "prefix"  # "prefix" (the affinity rule) or "round-robin" (the baseline)
    app_name: str = APP_NAME  # the Serve application's name in the cluster (one per front end)
    router_kwargs: dict[str, Any] = field(default_factory=dict)  # AffinityRule fields
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.routing not in ROUTING_POLICIES:
            raise ValueError(f"routing must be one of {ROUTING_POLICIES}, got {self.routing!r}")
        if not self.app_name or not self.app_name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"app_name must be letters, digits, '-' or '_', got {self.app_name!r}")
        if self.cpus_per_replica is not None and self.cpus_per_replica <= 0:
            raise ValueError(f"cpus_per_replica must be positive, got {self.cpus_per_replica}")


def replica_kv_budget(num_sharing: int, available: int | None = None) -> int:
    """Bytes of KV pool per replica: N replicas on one machine together take what one `astrai serve`
    takes on a CPU (the scheduler's `kv_budget_bytes`), each its share."""
    return kv_budget_bytes("cpu", share=num_sharing, available=available)


def engine_application(config: ServerConfig, options: ReplicaOptions, *, cpus: float, nodes: int) -> Application:
    """The Serve application of `options.replicas` engine replicas for the model in `config`."""
    kwargs = dict(config.engine_kwargs)
    on_cpu = str(kwargs.get("device") or "cpu").startswith("cpu")
    budget = replica_kv_budget(kv_share(options.replicas, nodes)) if on_cpu and "num_pages" not in kwargs else None
    spec = EngineSpec(config.model, kwargs, kv_budget_bytes=budget)
    router_kwargs = dict(options.router_kwargs)
    router_kwargs.setdefault("block_size", int(kwargs.get("page_size", 16)))
    router_kwargs["routing"] = options.routing
    deployment = engine_deployment(
        options.replicas, max_ongoing_requests=REPLICA_MAX_ONGOING,
        num_cpus=options.cpus_per_replica or cpus_per_replica(cpus, options.replicas), router_kwargs=router_kwargs)
    return deployment.bind(spec)


def deploy_replica_set(config: ServerConfig, options: ReplicaOptions, runtime: RayRuntime) -> ReplicaSetEngine:
    """Deploy the replicas on a started runtime and wait for them (blocking: the app's loader thread).

    The returned engine stops the runtime when it is shut down.
    """
    nodes = runtime.alive_nodes()
    application = engine_application(config, options, cpus=runtime.cluster_cpus(), nodes=nodes)
    logger.info("deploying %d engine replica(s) of %r on %d Ray node(s)", options.replicas, config.model, nodes)
    handle = runtime.deploy(application)
    return ReplicaSetEngine.connect(handle, num_replicas=options.replicas, on_shutdown=runtime.stop)


def start_replica_set(config: ServerConfig, options: ReplicaOptions) -> ReplicaSetEngine:
    """Start (or join) Ray and deploy the replicas: `RayRuntime` plus `deploy_replica_set`."""
    runtime = RayRuntime(options.ray_address, app_name=options.app_name, log_level=options.log_level)
    runtime.start()
    try:
        return deploy_replica_set(config, options, runtime)
    except BaseException:
        runtime.stop()
        raise
