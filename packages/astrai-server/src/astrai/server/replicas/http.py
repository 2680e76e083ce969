"""The single-process server's app, in front of a replica set.

`create_replica_app` is `create_app` with a `ReplicaSetEngine` as its engine (built in the
background by `connect`, as the single-process server loads its model). Every route, check and
error is the single-process code; `/health` and `/metrics` see the replicas through the
`ReplicatedEngine` seam. One ASGI middleware adds what only replicas have: the
`x-astrai-replica` response header naming the replica(s) that served a generation.
"""

from __future__ import annotations

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
    app.add_middleware(ReplicaHeaderMiddleware)
    return app


class ReplicaHeaderMiddleware:
    """Collects, per HTTP request, which replica served each engine request (`SERVED_BY`, filled by
    the replica set as a stream starts) and names them in the response header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
