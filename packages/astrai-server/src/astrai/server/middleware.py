"""ASGI middleware: body-size limit, API-key check and one log line per request.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses and client disconnects pass through
untouched.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from astrai.server.body import BodyTooLarge
from astrai.server.errors import error_body

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

logger = logging.getLogger("astrai.server")

PROTECTED_PREFIXES = ("/v1", "/metrics", "/tokenize", "/detokenize")


async def send_json(send: Callable[[dict], Awaitable[None]], status: int, body: dict,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers + (headers or [])})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once from Content-Length, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.per_path = per_path or {}  # exact paths with their own limit (file uploads)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.default_max_bytes)
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: dict, receive: Any, send: Any, max_bytes: int) -> None:
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, error_body(400, "Invalid Content-Length header"))
                return
            if declared > max_bytes:
                exc = BodyTooLarge(max_bytes)
                await send_json(send, 413, exc.body(), [(b"connection", b"close")])
                return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyMiddleware:
    """401 on every protected route unless `Authorization: Bearer <key>` matches."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.api_key or not _is_protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        header = (_header(scope, b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if not header:
            message = "Missing API key: send it as 'Authorization: Bearer <key>'"
        elif scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            message = "Incorrect API key provided"
        else:
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, error_body(401, message, code="invalid_api_key"),
                        [(b"www-authenticate", b"Bearer")])


def _is_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


class RequestLogMiddleware:
    """One line per request: id, route, status, tokens and timings (prompt text only if asked).

    Handlers put what they know into `scope["state"]["log"]` (a dict); this writes it once the
    response, streamed or not, is over.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        info: dict[str, Any] = {}
        state["log"] = info
        status = 0

        async def logging_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                request_id = info.get("id")
                if request_id:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"x-request-id", str(request_id).encode())]}
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            elapsed = time.perf_counter() - start
            request_id = info.pop("id", None) or f"req-{uuid.uuid4().hex[:12]}"
            if status == 0:
                status_text = "499" if info.get("disconnected") else "000"
            else:
                status_text = str(status)
            fields = " ".join(f"{k}={_fmt(v)}" for k, v in info.items())
            logger.info("%s %s %s %s %.3fs%s", request_id, scope.get("method"), scope.get("path"), status_text,
                        elapsed, f" {fields}" if fields else "")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):
        return repr(value) if (" " in value or not value) else value
    return str(value)
