"""`GET /health`, `GET /v1/models[/{id}]` and `GET /metrics`: what the server is serving, and how it is."""

from __future__ import annotations

from typing import Any

from astrai.server.answer_models import Health, ModelCard, ModelList
from astrai.server.errors import APIError
from astrai.server.metrics import CONTENT_TYPE
from astrai.server.openapi import json_answer
from astrai.server.replicated import ReplicatedEngine
from astrai.server.service import Service
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    engine_now = service.holder.peek()
    if engine_now is None:
        service.holder.get()  # raises the 503 that says loading or failed
        raise AssertionError("unreachable")
    model = service.config.model_name
    info = engine_now.describe()
    engine_body = {"forward": info.forward, "kernels": info.kernels, "weights": info.weights,
                   "dtype": info.dtype, "kv_cache_dtype": info.kv_cache_dtype}
    if not isinstance(engine_now, ReplicatedEngine):
        return JSONResponse({"status": "ok", "model": model, "engine": engine_body})
    report = await engine_now.health()
    body = {"status": "ok" if report.serving else "unavailable", "model": model,
            "engine": engine_body, "replicas": report.replicas, "deployment": report.deployment}
    if report.serving:
        return JSONResponse(body)
    error = APIError(503, "No engine replica is running; they are being restarted", code="no_replica_alive",
                     headers={"Retry-After": "2"})
    return JSONResponse({**body, **error.body()}, status_code=503, headers=error.headers)


def _model_card(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    card: dict[str, Any] = {"id": service.config.model_name, "object": "model", "created": service.started,
                            "owned_by": "astrai"}
    engine_now = service.holder.peek()
    if engine_now is not None:
        card["max_model_len"] = engine_now.max_model_len
    return card


def _embedding_cards(request: Request) -> list[dict[str, Any]]:
    embedder = request.app.state.embedder
    if embedder is None:
        return []
    service: Service = request.app.state.service
    card = {"id": embedder.name, "object": "model", "created": service.started, "owned_by": "astrai"}
    if embedder.wait(0):
        card["max_model_len"] = embedder.encoder().max_seq_length
    return [card]


async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_model_card(request), *_embedding_cards(request)]}


async def get_model(request: Request, model_id: str) -> dict:
    embedder = request.app.state.embedder
    if embedder is not None and model_id == embedder.name:
        return _embedding_cards(request)[0]
    service: Service = request.app.state.service
    service.check_model(model_id)
    return _model_card(request)


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    engine_now = service.holder.peek()
    if isinstance(engine_now, ReplicatedEngine):
        await engine_now.refresh()  # the replicas' numbers as of now, not the last health probe
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


def mount(app: FastAPI) -> None:
    app.add_api_route("/health", health, methods=["GET"], responses=json_answer(Health))
    app.add_api_route("/v1/models", list_models, methods=["GET"], responses=json_answer(ModelList))
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"], responses=json_answer(ModelCard))
    app.add_api_route("/metrics", metrics, methods=["GET"],
                      responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}}})
