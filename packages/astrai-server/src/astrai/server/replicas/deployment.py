"""The engine replica: one `Engine` per Ray Serve replica process, and the deployment that runs N.

Ray Serve places the replicas (spread over the cluster's nodes), restarts one whose process
dies or whose health check fails, and streams each generation back to the front end. A stream
starts with a `ReplicaTag`, then carries lists of `RequestOutput` deltas: whatever the engine
produced since the last item, so a busy replica sends fewer, larger messages.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import Any

import ray
from astrai.scheduler import Engine, EngineError, RequestOutput, SamplingParams, pages_in_budget
from astrai.server.replicas.wire import EngineDescription, EngineSpec, ReplicaStatus, ReplicaTag
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Deployment

logger = logging.getLogger("astrai.server")

DEPLOYMENT_NAME = "AstraiEngine"
ROUTER_CLASS = "astrai.server.replicas.router:PrefixAwareRouter"
ENGINE_CRASH = "engine thread crashed"  # how the engine fails its requests when its loop dies


def build_engine(spec: EngineSpec) -> Engine:
    """The engine, with a KV pool of `spec.kv_budget_bytes` unless `num_pages` is given.

    The pool size depends on the model (bytes per token), which is only known once it is
    loaded: a one-page engine loads it, then a second engine over the same weights gets the
    pool that fits the budget.
    """
    kwargs = dict(spec.engine_kwargs)
    if spec.kv_budget_bytes is None or "num_pages" in kwargs:
        return Engine.from_pretrained(spec.model, **kwargs)
    max_model_len = kwargs.pop("max_model_len", None)  # a one-page probe would cap it, with a warning
    probe = Engine.from_pretrained(spec.model, **kwargs, num_pages=1)
    try:
        info = probe.describe()
        pages = pages_in_budget(probe.config, info.kv_cache_dtype or info.dtype, info.page_size, spec.kv_budget_bytes)
        return probe.with_settings(num_pages=pages, max_model_len=max_model_len)
    finally:
        probe.shutdown()


class EngineReplica:
    """What runs inside each replica process (the Serve deployment's class)."""

    def __init__(self, spec: EngineSpec) -> None:
        _log_to_stderr()  # Ray forwards each replica's stderr to the front end, prefixed with the replica
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.pid = os.getpid()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.engine = build_engine(spec)
        self.failure: str | None = None  # set once the engine stops taking requests: the health check fails
        info = self.engine.describe()
        logger.info("engine replica %s (pid %d) ready: %d KV pages of %d tokens, context %d, %s, "
                    "OMP_NUM_THREADS=%s", self.replica, self.pid, info.num_pages, info.page_size,
                    info.max_model_len, info.dtype, os.environ.get("OMP_NUM_THREADS", "unset"))

    async def generate(self, prompt: list[int], params: SamplingParams, request_id: str, stream: bool = True,
                       priority: int = 0, **_routing_hints: Any) -> AsyncIterator[ReplicaTag | list[RequestOutput]]:
        """The replica's tag, then the request's deltas (`stream`) or its one final output;
        cancelling the call aborts the request."""
        yield ReplicaTag(self.replica, self.pid, self.node_id)
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def sink(out: RequestOutput) -> None:
            if out.error and out.error.startswith(ENGINE_CRASH):
                self.failure = out.error
            loop.call_soon_threadsafe(outputs.put_nowait, out)

        try:
            self.engine.add_request(prompt, params, request_id, priority, sink=sink, stream=stream)
        except ValueError as exc:  # the client's fault (400); a plain ValueError always crosses processes
            raise ValueError(str(exc)) from None
        except EngineError as exc:  # shut down or its thread died: this replica is done
            self.failure = str(exc)
            raise
        finished = False
        try:
            while not finished:
                batch = [await outputs.get()]
                while not outputs.empty():
                    batch.append(outputs.get_nowait())
                finished = batch[-1].finished
                yield batch
        finally:
            if not finished:
                self.engine.abort(request_id)

    def describe(self, **_routing_hints: Any) -> EngineDescription:
        return EngineDescription(tokenizer=self.engine.tokenizer, config=self.engine.config,
                                 info=self.engine.describe())

    def status(self, **_routing_hints: Any) -> ReplicaStatus:
        return ReplicaStatus(self.replica, self.pid, self.node_id, self.failure is None, self.engine.stats())

    def check_health(self) -> None:
        """Ray Serve calls this every few seconds; raising makes it replace the replica."""
        if self.failure is not None:
            raise RuntimeError(f"the engine of replica {self.replica} stopped: {self.failure}")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _log_to_stderr() -> None:
    package = logging.getLogger("astrai")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def engine_deployment(num_replicas: int, *, max_ongoing_requests: int, num_cpus: float,
                      router_kwargs: dict[str, Any] | None = None, health_check_period_s: float = 5.0) -> Deployment:
    """The Serve deployment of `num_replicas` engine replicas with the prefix-aware router."""
    return serve.deployment(
        EngineReplica, name=DEPLOYMENT_NAME, num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": num_cpus}, health_check_period_s=health_check_period_s,
        graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=5.0,
        request_router_config=RequestRouterConfig(request_router_class=ROUTER_CLASS,
                                                  request_router_kwargs=dict(router_kwargs or {})),
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )


def cpus_per_replica(total_cpus: float, num_replicas: int) -> float:
    """An equal share of the CPUs (fractions allowed, so more replicas than cores still start)."""
    share = total_cpus / num_replicas
    return float(math.floor(share)) if share >= 1 else round(share, 2)
