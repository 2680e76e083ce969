"""What the `/v1/files` and `/v1/vector_stores` handlers share: the service, OpenAI's list pages,
and metadata / attribute checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from astrai.server.errors import bad_request
from astrai.server.rag.service import RagService
from starlette.requests import Request

T = TypeVar("T")
_METADATA_KEY = re.compile(r"^.{1,64}$", re.S)


def rag(request: Request) -> RagService:
    return request.app.state.rag.check_ready()


def page(items: Sequence[T], key: Callable[[T], str], body: Callable[[T], dict], request: Request,
         default_limit: int) -> dict:
    """OpenAI's cursor list: `limit`, `order` (asc | desc by creation), `after` / `before` an id."""
    params = request.query_params
    try:
        limit = int(params.get("limit", default_limit))
    except ValueError:
        raise bad_request(f"limit: expected an integer, got {params.get('limit')!r}", "limit") from None
    if not 1 <= limit <= max(default_limit, 100):
        raise bad_request(f"limit: must be from 1 to {max(default_limit, 100)}, got {limit}", "limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"order: must be 'asc' or 'desc', got {order!r}", "order")
    rows = list(items) if order == "asc" else list(reversed(items))
    ids = [key(r) for r in rows]
    for name in ("after", "before"):
        cursor = params.get(name)
        if cursor is not None:
            if cursor not in ids:
                raise bad_request(f"{name}: no object with id {cursor!r} in this list", name)
            at = ids.index(cursor)
            rows, ids = (rows[at + 1 :], ids[at + 1 :]) if name == "after" else (rows[:at], ids[:at])
    kept = rows[:limit]
    return {"object": "list", "data": [body(r) for r in kept], "first_id": key(kept[0]) if kept else None,
            "last_id": key(kept[-1]) if kept else None, "has_more": len(rows) > limit}


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("at most 16 keys")
    for key, item in value.items():
        if not _METADATA_KEY.match(key):
            raise ValueError(f"key {key[:80]!r} must be 1 to 64 characters")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"value of {key!r} is longer than 512 characters")
    return value


def _no_expiry(value: Any) -> Any:
    if value is not None:
        raise ValueError("vector stores on this server do not expire; omit expires_after")
    return value
