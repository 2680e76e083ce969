"""`astrai serve --replicas N`: Ray first (in the main thread), then the usual server in front of it.

The CLI calls `replica_app(...)` instead of `create_app(...)` and runs the result exactly as it
runs the single-process app (same uvicorn server, URL line, signals, grace period). Ray starts
before the socket opens, so a bad `--ray-address` fails at once and Ray's signal handlers are
replaced by the server's; the replicas then deploy in the background while `/health` answers
503 `model_loading`, as a single model does while it loads. On exit the runtime is stopped:
the replicas, Serve and the local Ray instance (or only this application, on a joined cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from astrai.server.config import ServerConfig
from astrai.server.replicas.http import create_replica_app
from astrai.server.replicas.launch import ReplicaOptions, deploy_replica_set
from astrai.server.replicas.runtime import RayRuntime
from fastapi import FastAPI

logger = logging.getLogger("astrai.server")


@contextmanager
def replica_app(config: ServerConfig, options: ReplicaOptions,
                on_load_failure: Callable[[str], None] | None = None) -> Iterator[FastAPI]:
    """The HTTP app over `options.replicas` engine replicas; Ray runs while the block does."""
    where = f"joining the Ray cluster at {options.ray_address}" if options.ray_address else "starting a local Ray instance"
    print(f"AstrAI: {where} for {options.replicas} engine replicas ...", flush=True)
    runtime = RayRuntime(options.ray_address, app_name=options.app_name, log_level=options.log_level)
    try:
        runtime.start()
        print(f"AstrAI: Ray at {runtime.gcs_address()} ({runtime.cluster_cpus():g} CPUs on {runtime.alive_nodes()} "
              "node(s)); deploying the replicas", flush=True)
        yield create_replica_app(config, lambda: deploy_replica_set(config, options, runtime), on_load_failure)
    finally:
        runtime.stop()
