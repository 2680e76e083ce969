"""The generation endpoints: validate, tokenize, fit the context, admit, run, format.

Check order gives each failure its honest status: body (400/413) -> model name (404) ->
engine ready (503) -> prompt and limits (400) -> capacity (429) -> generation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from astrai.scheduler import EngineClient
from astrai.server import responses as R
from astrai.server.body import read_model
from astrai.server.errors import APIError, bad_request
from astrai.server.generation import ClientDisconnected, Generation, until_disconnect
from astrai.server.protocol import ChatCompletionRequest, CompletionRequest
from astrai.server.sampling import build_sampling_params
from astrai.server.service import Service
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse


class _CleanupStreamingResponse(StreamingResponse):
    """A StreamingResponse that always runs `cleanup`, even if the body was never iterated."""

    def __init__(self, content: AsyncIterator[str], cleanup: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cleanup()


async def chat_completions(request: Request) -> Response:
    service: Service = request.app.state.service
    req = await read_model(request, ChatCompletionRequest)
    service.check_model(req.model)
    engine = service.engine()
    messages = req.message_dicts()
    prompt_ids = await asyncio.to_thread(service.render_chat, engine, messages)
    service.log_prompt(request, messages)
    return await _run(request, service, engine, "chatcmpl", [prompt_ids], req, chat=True)


async def completions(request: Request) -> Response:
    service: Service = request.app.state.service
    req = await read_model(request, CompletionRequest)
    service.check_model(req.model)
    engine = service.engine()
    raw_prompts = req.prompts()
    if len(raw_prompts) > service.admission.limit:  # checked before tokenizing them all
        raise bad_request(f"prompt: {len(raw_prompts)} prompts in one request, but this server runs at most "
                          f"{service.admission.limit} requests at once", "prompt")
    prompts = await asyncio.to_thread(service.encode_prompts, engine, raw_prompts)
    service.log_prompt(request, req.prompt)
    return await _run(request, service, engine, "cmpl", prompts, req, chat=False)


async def _run(request: Request, service: Service, engine: EngineClient, prefix: str, prompts: list[list[int]],
               req: ChatCompletionRequest | CompletionRequest, *, chat: bool) -> Response:
    param = "messages" if chat else "prompt"
    max_tokens = service.fit_context(engine, prompts, req.output_limit, param)
    params = build_sampling_params(req, max_tokens)
    request_id = f"{prefix}-{uuid.uuid4().hex}"
    log = service.log_info(request)
    log["id"] = request_id
    service.admission.acquire(len(prompts))
    released = False
    gen = Generation(engine, request_id, prompts, params, on_finish=service.metrics.observe)

    def cleanup() -> None:
        nonlocal released
        gen.close()
        service.active.discard(gen)
        if not released:
            released = True
            service.admission.release(len(prompts))
            service.summarize(log, gen)

    gen.start()
    service.active.add(gen)
    try:
        await until_disconnect(request, gen.prime())
    except ClientDisconnected:
        cleanup()
        log["disconnected"] = True
        return Response(status_code=499)
    except BaseException:
        cleanup()
        raise

    created = int(time.time())
    model = service.config.model_name
    token_text = R.TokenText(engine) if req.num_logprobs is not None else None
    if req.stream:
        events = (_chat_events if chat else _completion_events)(gen, req, request_id, created, model, token_text,
                                                                 service, engine)
        return _CleanupStreamingResponse(events, cleanup)

    try:
        choices = await until_disconnect(request, gen.collect())
    except ClientDisconnected:
        log["disconnected"] = True
        return Response(status_code=499)
    finally:
        cleanup()
    for choice in choices:
        _raise_if_failed(choice.finish_reason, choice.error)
    if chat:
        body = R.chat_completion(request_id, created, model, choices, token_text)
    else:
        echo = [service.decode(engine, c.prompt_ids) for c in choices] if req.echo else None
        body = R.text_completion(request_id, created, model, choices, token_text, echo)
    return JSONResponse(body)


def _raise_if_failed(finish_reason: str | None, error: str | None) -> None:
    if finish_reason == "abort":
        raise APIError(503, "The request was aborted (the server is shutting down)", code="aborted")
    if finish_reason == "error":
        raise APIError(500, f"generation failed: {error or 'unknown engine error'}", code="engine_error")


async def _chat_events(gen: Generation, req: ChatCompletionRequest, request_id: str, created: int, model: str,
                       token_text: R.TokenText | None, service: Service, engine: EngineClient) -> AsyncIterator[str]:
    with_usage = req.include_usage
    try:
        for index in range(len(gen.choices)):
            yield R.sse(R.chat_chunk(request_id, created, model, index, {"role": "assistant", "content": ""},
                                     with_usage=with_usage))
        async for index, out in gen.events():
            logprobs = R.chat_logprobs(out.logprobs, token_text) if token_text and out.logprobs else None
            if out.text or logprobs:
                yield R.sse(R.chat_chunk(request_id, created, model, index, {"content": out.text or ""},
                                         logprobs=logprobs, with_usage=with_usage))
            if out.finished:
                _raise_if_failed(out.finish_reason, out.error)
                yield R.sse(R.chat_chunk(request_id, created, model, index, {}, finish_reason=out.finish_reason,
                                         with_usage=with_usage))
        if with_usage:
            yield R.sse(R.usage_chunk(request_id, created, model, "chat.completion.chunk", gen.choices))
        yield R.DONE
    except APIError as exc:
        yield R.sse(exc.body())
        yield R.DONE


async def _completion_events(gen: Generation, req: CompletionRequest, request_id: str, created: int, model: str,
                             token_text: R.TokenText | None, service: Service, engine: EngineClient) -> AsyncIterator[str]:
    with_usage = req.include_usage
    offsets = [0] * len(gen.choices)
    try:
        if req.echo:
            for index, choice in enumerate(gen.choices):
                prompt_text = service.decode(engine, choice.prompt_ids)
                offsets[index] = len(prompt_text)
                yield R.sse(R.completion_chunk(request_id, created, model, index, prompt_text, with_usage=with_usage))
        async for index, out in gen.events():
            logprobs = None
            if token_text and out.logprobs:
                logprobs = R.completion_logprobs(out.logprobs, token_text, offsets[index])
            offsets[index] += len(out.text or "")
            if out.finished:
                _raise_if_failed(out.finish_reason, out.error)
            if out.text or logprobs or out.finished:
                yield R.sse(R.completion_chunk(request_id, created, model, index, out.text or "",
                                               finish_reason=out.finish_reason if out.finished else None,
                                               logprobs=logprobs, with_usage=with_usage))
        if with_usage:
            yield R.sse(R.usage_chunk(request_id, created, model, "text_completion", gen.choices))
        yield R.DONE
    except APIError as exc:
        yield R.sse(exc.body())
        yield R.DONE

