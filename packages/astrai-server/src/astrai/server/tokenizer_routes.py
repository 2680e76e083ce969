"""`POST /tokenize` and `POST /detokenize` (vLLM's): the served model's tokenizer over HTTP."""

from __future__ import annotations

import asyncio

from astrai.server.answer_models import Detokenized, Tokens
from astrai.server.body import read_model
from astrai.server.errors import bad_request
from astrai.server.openai_models import DetokenizeRequest, TokenizeRequest, message_dicts
from astrai.server.openapi import json_answer, json_body
from astrai.server.service import Service
from fastapi import FastAPI, Request


async def tokenize(request: Request) -> dict:
    service: Service = request.app.state.service
    req = await read_model(request, TokenizeRequest)
    service.check_model(req.model)
    engine_now = service.engine()
    if req.messages is not None:
        ids = await asyncio.to_thread(service.render_chat, engine_now, message_dicts(req.messages))
    else:
        ids = list(engine_now.tokenizer.encode(req.prompt, add_special_tokens=bool(req.add_special_tokens)))
    return {"count": len(ids), "max_model_len": engine_now.max_model_len, "tokens": ids}


async def detokenize(request: Request) -> dict:
    service: Service = request.app.state.service
    req = await read_model(request, DetokenizeRequest)
    service.check_model(req.model)
    engine_now = service.engine()
    vocab = engine_now.config.vocab_size
    bad = next((t for t in req.tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise bad_request(f"tokens: token id {bad} is out of range [0, {vocab})", "tokens")
    return {"prompt": engine_now.tokenizer.decode(req.tokens, skip_special_tokens=False)}


def mount(app: FastAPI) -> None:
    app.add_api_route("/tokenize", tokenize, methods=["POST"], openapi_extra=json_body(TokenizeRequest),
                      responses=json_answer(Tokens))
    app.add_api_route("/detokenize", detokenize, methods=["POST"], openapi_extra=json_body(DetokenizeRequest),
                      responses=json_answer(Detokenized))
