"""`POST /v1/chat/completions` and `POST /v1/completions`: validate, tokenize, fit the context, run, format.

Check order gives each failure its honest status: body (400/413) -> model name (404) ->
engine ready (503) -> prompt and limits (400) -> capacity (429) -> generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from astrai.scheduler import EngineClient
from astrai.server import openai_bodies as R
from astrai.server.body import read_model
from astrai.server.choice import ChoiceState
from astrai.server.constraints import OutputFormat, OutputPlan, from_extra, plan_output
from astrai.server.errors import APIError, bad_request
from astrai.server.file_search import FileSearchRun, run_file_search
from astrai.server.generation import Generation, raise_if_failed
from astrai.server.openai_models import ChatCompletionRequest, CompletionRequest, named_tool
from astrai.server.sampling import build_sampling_params, tenant_of
from astrai.server.service import Service
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass
class Plan:
    """How one HTTP request maps onto the engine beyond plain sampling."""

    output: OutputPlan = field(default_factory=OutputPlan)
    n: int = 1  # samples per prompt given to the engine
    returned: int = 1  # of which the client gets back (best_of keeps the most likely)
    prompt_logprobs: int | None = None
    score_only: bool = False  # completions max_tokens=0 with echo: one token is generated, none returned


def chat_plan(req: ChatCompletionRequest) -> Plan:
    rf = req.response_format
    output_format = OutputFormat(rf.type, rf.json_schema.schema_ if rf.json_schema else None,
                                 "response_format") if rf is not None else None
    output = plan_output(req.functions, tool_choice=req.tool_choice, named=named_tool(req.tool_choice),
                         parallel=req.parallel_tool_calls is not False, output_format=output_format,
                         extra=req.structured_outputs)
    return Plan(output=output, n=req.num_choices, returned=req.num_choices)


async def chat_completions(request: Request) -> Response:
    service: Service = request.app.state.service
    req = await read_model(request, ChatCompletionRequest)
    service.check_model(req.model)
    engine = service.engine()
    plan = chat_plan(req)
    messages = req.message_dicts()
    functions = req.functions if plan.output.tool_names else []
    search_run = None
    if req.file_search is not None:
        search_run = await run_file_search(request, engine, req.file_search, messages, functions, req.output_limit,
                                           "file_search")
        prompt_ids = search_run.prompt.token_ids
    else:
        prompt_ids = await asyncio.to_thread(service.render_chat, engine, messages, functions)
    service.log_prompt(request, messages)
    return await _run(request, service, engine, "chatcmpl", [prompt_ids], req, plan, chat=True, search_run=search_run)


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
    output = OutputPlan(constraint=from_extra(req.structured_outputs)) if req.structured_outputs else OutputPlan()
    plan = Plan(output=output, n=req.num_candidates, returned=req.num_choices, score_only=req.max_tokens == 0,
                prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None)
    return await _run(request, service, engine, "cmpl", prompts, req, plan, chat=False)


async def _run(request: Request, service: Service, engine: EngineClient, prefix: str, prompts: list[list[int]],
               req: ChatCompletionRequest | CompletionRequest, plan: Plan, *, chat: bool,
               search_run: FileSearchRun | None = None) -> Response:
    param = "messages" if chat else "prompt"
    limit = 1 if plan.score_only else req.output_limit
    max_tokens = service.fit_context(engine, prompts, limit, param)
    ranked = plan.n > plan.returned  # best_of: rank samples by their log-probability
    constraint = plan.output.constraint
    params = build_sampling_params(
        req, max_tokens, structured=constraint.params if constraint else None, n=plan.n,
        prompt_logprobs=plan.prompt_logprobs,
        logprobs=(req.num_logprobs or 0) if ranked else None, tenant=tenant_of(request))
    request_id = f"{prefix}-{uuid.uuid4().hex}"
    log = service.log_info(request)
    log["id"] = request_id
    on_finish = search_run.counted(service.metrics.observe) if search_run else service.metrics.observe
    gen = Generation(engine, request_id, prompts, params, on_finish=on_finish,
                     constraint_param=constraint.param if constraint else None)
    run = await service.in_flight.start(request, gen, len(prompts) * plan.n, log)

    created = int(time.time())
    model = service.config.model_name
    token_text = R.TokenText(engine) if req.num_logprobs is not None else None
    if req.stream:
        if chat:
            found = {"queries": [search_run.query], "results": search_run.results()} if search_run else None
            events = _chat_events(gen, req, request_id, created, model, token_text, plan, found)
        else:
            events = _completion_events(gen, req, request_id, created, model, token_text, service, engine, plan)
        return run.stream(events)

    choices = await run.collect(request)
    if chat:
        messages = None
        if plan.output.tool_names:
            messages = []
            for c in choices:
                parser = plan.output.parser()
                assert parser is not None
                parser.feed(c.text)
                parser.finish()
                messages.append(R.tool_message(parser.content, parser.calls))
        body = R.chat_completion(request_id, created, model, choices, token_text, messages)
        if search_run is not None:  # our extension: what the file_search field retrieved
            body["file_search"] = {"queries": [search_run.query], "results": search_run.results()}
    else:
        counted = list(choices)
        if plan.score_only:
            for c in choices:  # the one token generated to run the prefill is not part of the answer
                c.text, c.token_ids, c.logprobs = "", [], []
        kept = best_of(choices, plan.n, plan.returned) if ranked else choices
        if ranked and req.num_logprobs is None:
            token_text = None
        echo = [service.decode(engine, c.prompt_ids) for c in kept] if req.echo else None
        body = R.text_completion(request_id, created, model, kept, token_text, echo, counted)
    return JSONResponse(body)


def best_of(choices: list[ChoiceState], n: int, keep: int) -> list[ChoiceState]:
    """Per prompt, the `keep` samples of the highest total log-probability (OpenAI's best_of)."""
    out: list[ChoiceState] = []
    for start in range(0, len(choices), n):
        group = choices[start:start + n]
        group.sort(key=lambda c: sum(e["logprob"] for e in c.logprobs), reverse=True)
        out += group[:keep]
    return out


def _tool_deltas(events: list[Any]) -> list[dict]:
    """Parser events -> chat deltas: content, a call's id and name first, then argument fragments."""
    deltas = []
    for e in events:
        if e.kind == "content":
            deltas.append({"content": e.text})
        elif e.kind == "call":
            deltas.append({"tool_calls": [{"index": e.call.index, "id": e.call.id, "type": "function",
                                           "function": {"name": e.call.name, "arguments": ""}}]})
        else:
            deltas.append({"tool_calls": [{"index": e.call.index, "function": {"arguments": e.text}}]})
    return deltas


async def _chat_events(gen: Generation, req: ChatCompletionRequest, request_id: str, created: int, model: str,
                       token_text: R.TokenText | None, plan: Plan, found: dict | None = None) -> AsyncIterator[str]:
    with_usage = req.include_usage
    parsers = [plan.output.parser() for _ in gen.choices]
    try:
        for index in range(len(gen.choices)):
            first: dict = {"role": "assistant", "content": None if plan.output.forced_tools else ""}
            chunk = R.chat_chunk(request_id, created, model, index, first, with_usage=with_usage)
            if found is not None and index == 0:  # our extension: what file_search retrieved, once
                chunk["file_search"] = found
            yield R.sse(chunk)
        async for index, out in gen.events():
            logprobs = R.chat_logprobs(out.logprobs, token_text) if token_text and out.logprobs else None
            parser = parsers[index]
            if parser is None:
                if out.text or logprobs:
                    yield R.sse(R.chat_chunk(request_id, created, model, index, {"content": out.text or ""},
                                             logprobs=logprobs, with_usage=with_usage))
            else:
                events = parser.feed(out.text or "") + (parser.finish() if out.finished else [])
                for delta in _tool_deltas(events):
                    yield R.sse(R.chat_chunk(request_id, created, model, index, delta, with_usage=with_usage))
            if out.finished:
                raise_if_failed(out.finish_reason, out.error)
                finish = out.finish_reason
                if parser is not None and parser.calls and finish == "stop":
                    finish = "tool_calls"
                yield R.sse(R.chat_chunk(request_id, created, model, index, {}, finish_reason=finish,
                                         with_usage=with_usage))
        if with_usage:
            yield R.sse(R.usage_chunk(request_id, created, model, "chat.completion.chunk", gen.choices))
        yield R.DONE
    except APIError as exc:
        yield R.sse(exc.body())
        yield R.DONE


async def _completion_events(gen: Generation, req: CompletionRequest, request_id: str, created: int, model: str,
                             token_text: R.TokenText | None, service: Service, engine: EngineClient,
                             plan: Plan) -> AsyncIterator[str]:
    with_usage = req.include_usage
    offsets = [0] * len(gen.choices)
    echoed = [not req.echo] * len(gen.choices)
    try:
        async for index, out in gen.events():
            if not echoed[index]:  # the prompt first, with its logprobs once the engine has scored it
                echoed[index] = True
                choice = gen.choices[index]
                prompt_text = service.decode(engine, choice.prompt_ids)
                offsets[index] = len(prompt_text)
                scored = R.prompt_logprobs(choice, token_text) if token_text and choice.prompt_logprobs else None
                yield R.sse(R.completion_chunk(request_id, created, model, index, prompt_text, logprobs=scored,
                                               with_usage=with_usage))
            if plan.score_only:
                out = dataclasses.replace(out, text="", token_ids=[], logprobs=None)
                gen.choices[index].text, gen.choices[index].token_ids = "", []
            logprobs = None
            if token_text and out.logprobs:
                logprobs = R.completion_logprobs(out.logprobs, token_text, offsets[index])
            offsets[index] += len(out.text or "")
            if out.finished:
                raise_if_failed(out.finish_reason, out.error)
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

