"""The FastAPI application, composed step by step: state, error shape, middleware, routes, OpenAPI.

`create_app(config)` loads the model named in the config in a background thread once the
server starts; `create_app(config, engine=e)` serves an engine that already exists (tests,
embedding). Either way the socket is listening before the model is ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from astrai.scheduler import EngineClient
from astrai.server import completion_routes, responses_route, system_routes, tokenizer_routes
from astrai.server.answer_models import ERROR_ANSWERS, ChatCompletion, ResponseObject, TextCompletion
from astrai.server.config import ServerConfig
from astrai.server.errors import APIError, install_error_handlers
from astrai.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestLogMiddleware
from astrai.server.openai_models import ChatCompletionRequest, CompletionRequest
from astrai.server.openapi import install_openapi, json_answer, json_body
from astrai.server.responses_request import ResponsesRequest
from astrai.server.retrieval_gate import make_embedder, mount_embeddings
from astrai.server.retrieval_gate import mount as mount_retrieval
from astrai.server.service import Service
from astrai.server.state import EngineHolder
from fastapi import FastAPI

if TYPE_CHECKING:
    from astrai.server.embedder import Embedder
    from astrai.server.rag import RagService

MULTIPART_OVERHEAD = 64 * 1024  # an upload's form fields and part headers around the file itself


def default_engine_factory(config: ServerConfig) -> Callable[[], EngineClient]:
    def load() -> EngineClient:
        from astrai.scheduler import Engine

        return Engine.from_pretrained(config.model, **config.engine_kwargs)

    return load


def create_app(config: ServerConfig | None = None, *, engine: EngineClient | None = None,
               engine_factory: Callable[[], EngineClient] | None = None,
               on_load_failure: Callable[[str], None] | None = None, shutdown_engine: bool = True) -> FastAPI:
    """Build the app. Give `engine` to serve an existing one (never shut down by the app); an engine
    made by `engine_factory` is shut down with the app unless `shutdown_engine` is False."""
    config = config or ServerConfig()
    if engine is None and engine_factory is None:
        engine_factory = default_engine_factory(config)
    holder = EngineHolder(factory=engine_factory, engine=engine, owns_engine=shutdown_engine, on_failure=on_load_failure,
                          description=f"model {config.model!r}")
    service = Service(config, holder)
    app = FastAPI(title="AstrAI", summary="An OpenAI-compatible LLM inference server", lifespan=_lifespan,
                  responses=ERROR_ANSWERS)
    app.state.service = service
    app.state.embedder = make_embedder(config, service.metrics.registry)  # None without the rag extra
    app.state.rag = None
    install_error_handlers(app)
    _add_middleware(app, config)
    system_routes.mount(app)
    tokenizer_routes.mount(app)
    mount_embeddings(app)
    app.state.rag = mount_retrieval(app, config, app.state.embedder, service.metrics.registry)
    _mount_generation_routes(app)
    install_openapi(app)
    return app


def _lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
    """Start loading the model (and the embedder, and the stores) with the server; stop them after it."""
    return _running(app.state.service, app.state.embedder, app.state.rag)


@asynccontextmanager
async def _running(service: Service, embedder: Embedder | None, rag: RagService | None) -> AsyncIterator[None]:
    service.holder.start_loading()
    if embedder is not None:
        embedder.start()
    if rag is not None:
        rag.start()
    try:
        yield
    finally:
        if embedder is not None:
            await embedder.close()
        if rag is not None:
            await asyncio.to_thread(rag.close)
        await asyncio.to_thread(service.holder.shutdown)


def _add_middleware(app: FastAPI, config: ServerConfig) -> None:
    # Added last = outermost: log every request, then check the key, then the body size.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes,
                       per_path={"/v1/files": config.max_file_bytes + MULTIPART_OVERHEAD})
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(RequestLogMiddleware)


def _mount_generation_routes(app: FastAPI) -> None:
    app.add_api_route("/v1/chat/completions", completion_routes.chat_completions, methods=["POST"],
                      openapi_extra=json_body(ChatCompletionRequest), responses=json_answer(ChatCompletion))
    app.add_api_route("/v1/completions", completion_routes.completions, methods=["POST"],
                      openapi_extra=json_body(CompletionRequest), responses=json_answer(TextCompletion))
    app.add_api_route("/v1/responses", responses_route.create_response, methods=["POST"],
                      openapi_extra=json_body(ResponsesRequest), responses=json_answer(ResponseObject))
    for method in ("GET", "DELETE"):  # one operation each (OpenAPI operation ids are per method)
        app.add_api_route("/v1/responses/{response_id}", responses_route.stored_response, methods=[method],
                          name=f"{method.lower()}_stored_response")


__all__ = ["create_app", "APIError"]
