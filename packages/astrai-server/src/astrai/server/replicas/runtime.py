"""Ray for `astrai serve --replicas N`: a local instance it starts and stops, or a cluster it joins.

A local instance's processes (GCS, raylet, workers) are tied by Linux to the *thread* that
started them (Ray spawns them with a parent-death signal). `astrai serve` starts Ray from the
main thread, which lives as long as the process; started from any other thread, a dedicated
thread starts Ray and stays alive until `stop()`, then shuts it down itself. Joining a cluster (`address`) starts nothing:
`stop()` deletes the application this front end deployed and disconnects, leaving the cluster up.
Ray Serve's own HTTP proxy is never started here: the front end serves HTTP itself.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("astrai.server")

APP_NAME = "astrai"
T = TypeVar("T")


class RayRuntime:
    """Owns the Ray connection and the Serve application of one front end."""

    def __init__(self, address: str | None = None, *, app_name: str = APP_NAME, num_cpus: int | None = None,
                 log_level: str = "warning") -> None:
        self.address = address
        self.app_name = app_name
        self.num_cpus = num_cpus
        self.log_level = log_level
        self._owner: threading.Thread | None = None
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue] | None] = queue.Queue()
        self._deployed = False
        self._stopped = False

    @property
    def local(self) -> bool:
        return self.address is None

    def start(self) -> None:
        """Start the local instance (in its owner thread) or connect to the cluster."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address is not None:
            check_reachable(self.address)
        if self.local and threading.current_thread() is not threading.main_thread():
            self._owner = threading.Thread(target=self._own, name="astrai-ray", daemon=True)
            self._owner.start()
        self._call(self._init)

    def gcs_address(self) -> str:
        """The cluster's address (`ray status --address ...`, `ray.init(address=...)`)."""
        return str(self._call(lambda: ray.get_runtime_context().gcs_address))

    def cluster_cpus(self) -> float:
        return float(self._call(lambda: ray.cluster_resources().get("CPU", 1.0)))

    def alive_nodes(self) -> int:
        return max(1, sum(1 for node in self._call(ray.nodes) if node.get("Alive")))

    def deploy(self, application: Any) -> DeploymentHandle:
        """Run the Serve application (blocks until every replica is up) and return its ingress handle."""

        def run() -> DeploymentHandle:
            # Joins a Serve instance already running in the cluster (its settings then stay as they are).
            serve.start(proxy_location="Disabled", logging_config={"log_level": self._serve_log_level})
            if self.app_name in serve.status().applications:  # deploying would replace another's replicas
                raise RuntimeError(f"the Ray cluster already runs a Serve application named {self.app_name!r} "
                                   "(another astrai serve?); choose another with --ray-app-name")
            self._deployed = True
            return serve.run(application, name=self.app_name, route_prefix=None)

        return self._call(run)

    @property
    def _serve_log_level(self) -> str:
        """Serve's own components log warnings and errors only, unless debugging."""
        return "DEBUG" if self.log_level.lower() == "debug" else "WARNING"

    def stop(self) -> None:
        """Delete what was deployed; shut the local instance down. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._call(self._teardown)
        finally:
            if self._owner is not None:
                self._jobs.put(None)
                self._owner.join(60)

    # --- internals -----------------------------------------------------------------------

    def _init(self) -> None:
        level = getattr(logging, self.log_level.upper(), logging.WARNING)
        kwargs: dict[str, Any] = {"logging_level": level, "log_to_driver": True}
        if self.local:
            ray.init(address="local", include_dashboard=False, num_cpus=self.num_cpus or os.cpu_count(), **kwargs)
        else:
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as exc:
                chain = f"{exc} {exc.__cause__} {exc.__context__}"
                if "InvalidAuthToken" in chain or "AuthenticationError" in chain:
                    raise ConnectionError("the cluster uses Ray's token authentication: run with RAY_AUTH_MODE=token "
                                          "and its token (~/.ray/auth_token, or RAY_AUTH_TOKEN)") from None
                raise
        for name in ("ray", "ray.serve"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))

    def _teardown(self) -> None:
        if not ray.is_initialized():
            return
        try:
            if self.local:
                serve.shutdown()
            elif self._deployed:
                serve.delete(self.app_name)  # the cluster and its other applications stay
        finally:
            ray.shutdown()

    def _own(self) -> None:
        """The owner thread: run jobs handed to it until told to stop."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, reply = job
            try:
                reply.put((True, fn()))
            except BaseException as exc:
                reply.put((False, exc))

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the owner thread (local instance) or right here (joined cluster)."""
        if self._owner is None or threading.current_thread() is self._owner:
            return fn()
        reply: queue.Queue = queue.Queue()
        self._jobs.put((fn, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, naming the address, if a `host:port` cluster address does not answer (Ray itself
    retries for minutes); other forms ("auto", "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc}); start the cluster with "
                              "`ray start --head` and pass its address") from None


def kv_share(num_replicas: int, alive_nodes: int) -> int:
    """How many replicas share one machine's KV budget: the replicas spread evenly over the nodes."""
    return max(1, math.ceil(num_replicas / max(1, alive_nodes)))
