"""The single-process server's app, in front of a replica set: what differs is added at the edge.

`create_replica_app` is `create_app` with a `ReplicaSetEngine` as its engine (built in the
background by `connect`, as the single-process server loads its model), plus one ASGI
middleware that
- names the replica(s) that served a generation in the `x-astrai-replica` response header,
- answers `GET /health` with every replica's state and pid (503 with Retry-After when none is
  running), and
- refreshes the replicas' stats before `GET /metrics` renders them.
Every other route, check and error is the single-process code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from astrai.server.app import create_app
from astrai.server.config import ServerConfig
from astrai.server.replicas.replica_set import SERVED_BY, ReplicaSetEngine
from fastapi import FastAPI

REPLICA_HEADER = b"x-astrai-replica"


def create_replica_app(config: ServerConfig, connect: Callable[[], ReplicaSetEngine],
                       on_load_failure: Callable[[str], None] | None = None) -> FastAPI:
    app = create_app(config, engine_factory=connect, on_load_failure=on_load_failure)
    app.add_middleware(ReplicaMiddleware, get_engine=app.state.service.holder.peek, model_name=config.model_name)
    return app


class ReplicaMiddleware:
    """Outermost layer of the replica app (see the module docstring)."""

    def __init__(self, app: Any, get_engine: Callable[[], ReplicaSetEngine | None], model_name: str) -> None:
        self.app = app
        self.get_engine = get_engine
        self.model_name = model_name

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        engine = self.get_engine()
        route = (scope.get("method"), scope.get("path"))
        if engine is not None and route == ("GET", "/health"):
            await self._health(engine, send)
            return
        if engine is not None and route == ("GET", "/metrics"):
            await engine.monitor.refresh()
        served: dict[str, str] = {}
        token = SERVED_BY.set(served)

        async def send_with_replica(message: dict) -> None:
            if message["type"] == "http.response.start" and served:
                names = ",".join(dict.fromkeys(served.values()))
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, names.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            SERVED_BY.reset(token)

    async def _health(self, engine: ReplicaSetEngine, send: Any) -> None:
        await engine.monitor.refresh()
        views = engine.monitor.replicas()
        running = [v for v in views if v.state == "running"]
        try:
            deployment = await asyncio.to_thread(engine.monitor.deployment_status)
        except Exception as exc:  # the controller is unreachable: say so rather than fail the probe
            deployment = {"error": f"{type(exc).__name__}: {exc}"}
        body = {"status": "ok" if running else "unavailable", "model": self.model_name,
                "replicas": [v.to_dict() for v in views], "deployment": deployment}
        headers = [(b"content-type", b"application/json")]
        status = 200
        if not running:
            status = 503
            body["error"] = {"message": "No engine replica is running; Ray Serve is restarting them",
                             "type": "server_error", "param": None, "code": "no_replica_alive"}
            headers.append((b"retry-after", b"2"))
        payload = json.dumps(body).encode()
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
