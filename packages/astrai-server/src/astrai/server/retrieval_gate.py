"""Whether this server offers embeddings, files, vector stores and RAG, decided without importing them.

All of them come with the `astrai-server[rag]` extra: the encoder is astrai.retrieval's (DESIGN.md:
server -> retrieval -> model), and files and vector stores also need python-multipart, a data
folder and an embedding model. When something is missing their routes still answer, with a 501
that says what to install or pass; `astrai.retrieval` is then never imported.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from astrai.server.config import ServerConfig
from astrai.server.errors import APIError
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.requests import Request

if TYPE_CHECKING:
    from astrai.server.embedder import Embedder
    from astrai.server.rag import RagService

logger = logging.getLogger("astrai.server")
RAG_PREFIXES = ("/v1/files", "/v1/vector_stores")
EXTRA = "pip install 'astrai-server[rag]'"
# (module, distribution) the extra brings, per feature
ENCODER_MODULES = (("astrai.retrieval", "astrai-retrieval"),)
RAG_MODULES = (*ENCODER_MODULES, ("python_multipart", "python-multipart"))


def missing_extra(modules: Sequence[tuple[str, str]] = RAG_MODULES) -> str | None:
    """The first distribution of the rag extra in `modules` that is not installed (None: all are)."""
    for module, dist in modules:
        if importlib.util.find_spec(module) is None:
            return dist
    return None


def embeddings_problem() -> str | None:
    """Why `/v1/embeddings` cannot be served (None: it can)."""
    dist = missing_extra(ENCODER_MODULES)
    return None if dist is None else f"embeddings need the rag extra ({dist} is not installed): {EXTRA}"


def make_embedder(config: ServerConfig, registry: CollectorRegistry) -> Embedder | None:
    """The embedder `config.embedding_model` names; None when none is named or the extra is missing."""
    if config.embedding_model is None:
        return None
    problem = embeddings_problem()
    if problem is not None:
        logger.warning("embedding model %r is not served: %s", config.embedding_model, problem)
        return None
    from astrai.server.embedder import Embedder

    assert config.embedding_model_name is not None
    return Embedder(config.embedding_model_name, config.embedding_model, registry=registry)


def why_unavailable(config: ServerConfig, embedder: Embedder | None) -> str | None:
    """Why files and vector stores cannot be served (None: they can)."""
    dist = missing_extra(RAG_MODULES)
    if dist is not None:
        return f"files and vector stores need the rag extra ({dist} is not installed): {EXTRA}"
    if config.data_dir is None:
        return "this server was started without a data folder for files and vector stores (--data-dir)"
    if embedder is None:
        return "vector stores need an embedding model; start the server with --embedding-model"
    return None


def mount_embeddings(app: FastAPI) -> None:
    """`POST /v1/embeddings`, or a 501 naming the extra."""
    problem = embeddings_problem()
    if problem is None:
        from astrai.server.answer_models import EmbeddingList
        from astrai.server.embeddings import EmbeddingRequest, create_embeddings
        from astrai.server.openapi import json_answer, json_body

        app.add_api_route("/v1/embeddings", create_embeddings, methods=["POST"], openapi_extra=json_body(EmbeddingRequest),
                          responses=json_answer(EmbeddingList))
    else:
        app.add_api_route("/v1/embeddings", _unavailable(problem), methods=["POST"], include_in_schema=False)


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
    unavailable = _unavailable(problem)
    for prefix in RAG_PREFIXES:
        # Not in the OpenAPI document: nothing is served here until the server is started with them.
        app.add_api_route(prefix, unavailable, methods=["GET", "POST"], include_in_schema=False)
        app.add_api_route(prefix + "/{rest:path}", unavailable, methods=["GET", "POST", "DELETE"],
                          include_in_schema=False)
    return None


def _unavailable(problem: str) -> Callable[[Request], Awaitable[None]]:
    """A route that answers every request with a 501 stating `problem`."""

    async def unavailable(request: Request) -> None:
        raise APIError(501, f"{request.method} {request.url.path} is not available: {problem}",
                       code="not_implemented")

    return unavailable
