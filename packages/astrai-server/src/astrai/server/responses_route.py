"""`POST /v1/responses` (and `GET`/`DELETE /v1/responses/{id}`, which find nothing): the route.

The request is translated to a chat prompt (`responses_request`), its output planned and run
like chat's (`constraints.plan_output`, `generation`), and answered as a response body or its
event stream (`responses_events`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from astrai.server.body import read_model
from astrai.server.constraints import OutputFormat, plan_output
from astrai.server.errors import APIError, bad_request
from astrai.server.file_search import run_file_search
from astrai.server.generation import Generation, raise_if_failed
from astrai.server.responses_events import (
    EventWriter,
    ResponseShell,
    function_call_item,
    message_item,
    new_id,
)
from astrai.server.responses_request import ResponsesRequest, ResponsesSampling, input_messages
from astrai.server.sampling import build_sampling_params, tenant_of
from astrai.server.service import Service
from astrai.server.tools import ToolCallParser
from astrai.server.usage import TokenUsage
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


async def create_response(request: Request) -> Response:
    service: Service = request.app.state.service
    req = await read_model(request, ResponsesRequest)
    service.check_model(req.model)
    engine = service.engine()
    functions = req.functions()
    messages = input_messages(req)
    tool_choice = req.tool_choice if req.tool_choice is not None else "auto"
    named = tool_choice.get("name") if isinstance(tool_choice, dict) else None
    if named is not None and named not in {f["name"] for f in functions}:
        raise bad_request(f"tool_choice: function {named!r} is not among the tools", "tool_choice")
    fmt = req.text.format if req.text and req.text.format else None
    plan = plan_output(functions, tool_choice=tool_choice, named=named, parallel=req.parallel_tool_calls is not False,
                       output_format=OutputFormat(fmt.type, fmt.schema_, "text.format") if fmt else None)
    shown = functions if plan.tool_names else []  # the tools the prompt describes
    searched = req.file_search()
    search_run = None
    if searched is not None:
        where, tool = searched
        search_run = await run_file_search(request, engine, tool, messages, shown, req.max_output_tokens,
                                           f"tools.{where}")
        prompt_ids = search_run.prompt.token_ids
    else:
        prompt_ids = await asyncio.to_thread(service.render_chat, engine, messages, shown, "input")
    service.log_prompt(request, messages)
    max_tokens = service.fit_context(engine, [prompt_ids], req.max_output_tokens, "input")
    constraint = plan.constraint
    params = build_sampling_params(ResponsesSampling.of(req), max_tokens,
                                   structured=constraint.params if constraint else None, tenant=tenant_of(request))
    shell = ResponseShell(
        id=new_id("resp"), created_at=int(time.time()), model=service.config.model_name,
        instructions=req.instructions, max_output_tokens=req.max_output_tokens, temperature=req.temperature,
        top_p=req.top_p, tools=[*([search_run.spec.echo()] if search_run else []),
                                *({"type": "function", **f} for f in functions)], tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        text_format=fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"},
        metadata=req.metadata or {}, user=req.user)
    log = service.log_info(request)
    log["id"] = shell.id
    on_finish = search_run.counted(service.metrics.observe) if search_run else service.metrics.observe
    gen = Generation(engine, shell.id, [prompt_ids], params, on_finish=on_finish,
                     constraint_param=constraint.param if constraint else None)
    run = await service.in_flight.start(request, gen, 1, log)
    search_item = None
    if search_run is not None:
        search_item = search_run.call_item(new_id("fs"), "file_search_call.results" in (req.include or ()))
    if req.stream:
        parser = ToolCallParser(set(plan.tool_names), incremental=plan.forced_tools)
        return run.stream(_events(gen, shell, parser, search_item))
    (choice,) = await run.collect(request)
    output: list[dict] = [search_item] if search_item else []
    parser = ToolCallParser(set(plan.tool_names))  # the whole text at once: every call is checked
    parser.feed(choice.text)
    parser.finish()
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    if parser.content.strip() or not parser.calls:
        output.append(message_item(new_id("msg"), parser.content, status))
    for call in parser.calls:
        output.append(function_call_item(new_id("fc"), call.id, call.name, call.arguments, "completed"))
    reason = "max_output_tokens" if choice.finish_reason == "length" else None
    return JSONResponse(shell.body(status, output, TokenUsage.of([choice]).responses_body(), reason))


async def _events(gen: Generation, shell: ResponseShell, parser: ToolCallParser,
                  search_item: dict | None = None) -> AsyncIterator[str]:
    writer = EventWriter(shell)
    try:
        for line in writer.start():
            yield line
        if search_item is not None:
            for line in writer.file_search(search_item):
                yield line
        async for _, out in gen.events():
            events = parser.feed(out.text or "") + (parser.finish() if out.finished else [])
            for e in events:
                lines = (writer.text(e.text) if e.kind == "content" else
                         writer.call(e.call.id, e.call.name) if e.kind == "call" else writer.arguments(e.text))
                for line in lines:
                    yield line
            if out.finished:
                raise_if_failed(out.finish_reason, out.error)
                if all(item["type"] == "file_search_call" for item in writer.output):
                    for line in writer.text(""):
                        yield line
                reason = "max_output_tokens" if out.finish_reason == "length" else None
                for line in writer.finish(TokenUsage.of(gen.choices).responses_body(), reason):
                    yield line
    except APIError as exc:
        yield writer.event("error", code=exc.code, message=exc.message, param=exc.param)


async def stored_response(request: Request) -> Response:
    raise APIError(404, "Responses are not stored by this server, so none can be retrieved",
                   param="response_id", code="not_found")
