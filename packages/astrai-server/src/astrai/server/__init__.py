"""astrai.server: the OpenAI-compatible HTTP server and the `astrai` command line.

`create_app(ServerConfig(...))` builds the FastAPI app (model loaded in the background);
`create_app(config, engine=engine)` serves an Engine that already exists.

Names are imported lazily so `astrai --help` and argument errors do not wait for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astrai.server.app import create_app
    from astrai.server.config import ServerConfig
    from astrai.server.errors import APIError
    from astrai.server.metrics import ServerMetrics

__all__ = ["APIError", "ServerConfig", "ServerMetrics", "create_app"]

_HOMES = {"create_app": "astrai.server.app", "ServerConfig": "astrai.server.config",
          "APIError": "astrai.server.errors", "ServerMetrics": "astrai.server.metrics"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'astrai.server' has no attribute {name!r}")
