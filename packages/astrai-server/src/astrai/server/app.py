"""The FastAPI application: routes, middleware and the background model load.

`create_app(config)` loads the model named in the config in a background thread once the
server starts; `create_app(config, engine=e)` serves an engine that already exists (tests,
embedding). Either way the socket is listening before the model is ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from astrai.scheduler import EngineClient
from astrai.server import handlers, responses_handler
from astrai.server.body import read_model
from astrai.server.config import ServerConfig
from astrai.server.errors import APIError, bad_request, install_error_handlers
from astrai.server.metrics import CONTENT_TYPE
from astrai.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestLogMiddleware
from astrai.server.protocol import DetokenizeRequest, TokenizeRequest, message_dicts
from astrai.server.replicated import ReplicatedEngine
from astrai.server.retrieval_gate import make_embedder, mount_embeddings
from astrai.server.retrieval_gate import mount as mount_retrieval
from astrai.server.service import Service
from astrai.server.state import EngineHolder
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

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
    embedder = make_embedder(config, service.metrics.registry)  # None without the rag extra
    started = int(time.time())
    rag = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start_loading()
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
            await asyncio.to_thread(holder.shutdown)

    app = FastAPI(title="AstrAI", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.embedder = embedder
    app.state.rag = None
    install_error_handlers(app)
    # Added last = outermost: log every request, then check the key, then the body size.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes,
                       per_path={"/v1/files": config.max_file_bytes + MULTIPART_OVERHEAD})
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(RequestLogMiddleware)

    @app.get("/health")
    async def health() -> Response:
        engine_now = holder.peek()
        if engine_now is None:
            holder.get()  # raises the 503 that says loading or failed
            raise AssertionError("unreachable")
        if not isinstance(engine_now, ReplicatedEngine):
            return JSONResponse({"status": "ok", "model": config.model_name})
        report = await engine_now.health()
        body = {"status": "ok" if report.serving else "unavailable", "model": config.model_name,
                "replicas": report.replicas, "deployment": report.deployment}
        if report.serving:
            return JSONResponse(body)
        error = APIError(503, "No engine replica is running; they are being restarted", code="no_replica_alive",
                         headers={"Retry-After": "2"})
        return JSONResponse({**body, **error.body()}, status_code=503, headers=error.headers)

    def model_card() -> dict:
        card = {"id": config.model_name, "object": "model", "created": started, "owned_by": "astrai"}
        engine_now = holder.peek()
        if engine_now is not None:
            card["max_model_len"] = engine_now.max_model_len
        return card

    def embedding_card() -> list[dict]:
        if embedder is None:
            return []
        card = {"id": embedder.name, "object": "model", "created": started, "owned_by": "astrai"}
        if embedder.wait(0):
            card["max_model_len"] = embedder.encoder().max_seq_length
        return [card]

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card(), *embedding_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict:
        if embedder is not None and model_id == embedder.name:
            return embedding_card()[0]
        service.check_model(model_id)
        return model_card()

    @app.get("/metrics")
    async def metrics() -> Response:
        engine_now = holder.peek()
        if isinstance(engine_now, ReplicatedEngine):
            await engine_now.refresh()  # the replicas' numbers as of now, not the last health probe
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        req = await read_model(request, TokenizeRequest)
        service.check_model(req.model)
        engine_now = service.engine()
        if req.messages is not None:
            ids = await asyncio.to_thread(service.render_chat, engine_now, message_dicts(req.messages))
        else:
            ids = list(engine_now.tokenizer.encode(req.prompt, add_special_tokens=bool(req.add_special_tokens)))
        return {"count": len(ids), "max_model_len": engine_now.max_model_len, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict:
        req = await read_model(request, DetokenizeRequest)
        service.check_model(req.model)
        engine_now = service.engine()
        vocab = engine_now.config.vocab_size
        bad = next((t for t in req.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise bad_request(f"tokens: token id {bad} is out of range [0, {vocab})", "tokens")
        return {"prompt": engine_now.tokenizer.decode(req.tokens, skip_special_tokens=False)}

    mount_embeddings(app)
    rag = mount_retrieval(app, config, embedder, service.metrics.registry)
    app.add_api_route("/v1/chat/completions", handlers.chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", handlers.completions, methods=["POST"])
    app.add_api_route("/v1/responses", responses_handler.create_response, methods=["POST"])
    app.add_api_route("/v1/responses/{response_id}", responses_handler.stored_response, methods=["GET", "DELETE"])
    return app


__all__ = ["create_app", "APIError"]
