"""Whether this server offers files, vector stores and RAG, decided without importing them.

They need a data folder, an embedding model and the `astrai-server[rag]` extra (astrai-retrieval
and python-multipart). When one is missing their routes still answer, with a 501 that says what
to install or pass; `astrai.retrieval` is then never imported.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

from astrai.server.config import ServerConfig
from astrai.server.embedder import Embedder
from astrai.server.errors import APIError
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.requests import Request

if TYPE_CHECKING:
    from astrai.server.rag import RagService

logger = logging.getLogger("astrai.server")
RAG_PREFIXES = ("/v1/files", "/v1/vector_stores")
EXTRA = "pip install 'astrai-server[rag]'"


def missing_extra() -> str | None:
    """What of the rag extra is not installed (None: all of it is)."""
    for module, dist in (("astrai.retrieval", "astrai-retrieval"), ("python_multipart", "python-multipart")):
        if importlib.util.find_spec(module) is None:
            return dist
    return None


def why_unavailable(config: ServerConfig, embedder: Embedder | None) -> str | None:
    if config.data_dir is None:
        return "this server was started without a data folder for files and vector stores (--data-dir)"
    if embedder is None:
        return "vector stores need an embedding model; start the server with --embedding-model"
    dist = missing_extra()
    if dist is not None:
        return f"files and vector stores need the rag extra ({dist} is not installed): {EXTRA}"
    return None


def mount(app: FastAPI, config: ServerConfig, embedder: Embedder | None,
          registry: CollectorRegistry) -> RagService | None:
    """Install the retrieval routes, or ones that explain why they are not here."""
    problem = why_unavailable(config, embedder)
    if problem is None:
        from astrai.server.rag import install

        assert embedder is not None and config.data_dir is not None
        try:
            service = install(app, config.data_dir, embedder, config.max_file_bytes, registry)
        except OSError as exc:  # an unwritable or unreadable data folder: the rest of the server still serves
            problem = f"the data folder {config.data_dir!r} cannot be used ({exc})"
            logger.error("files and vector stores are off: %s", problem)
        else:
            app.state.rag_problem = None
            return service
    app.state.rag_problem = problem
    app.state.rag = None

    async def unavailable(request: Request) -> None:
        raise APIError(501, f"{request.method} {request.url.path} is not available: {problem}",
                       code="not_implemented")

    for prefix in RAG_PREFIXES:
        app.add_api_route(prefix, unavailable, methods=["GET", "POST"])
        app.add_api_route(prefix + "/{rest:path}", unavailable, methods=["GET", "POST", "DELETE"])
    return None
