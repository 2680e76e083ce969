"""`POST /v1/responses`: the Responses request model, its translation to chat, and the handler."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from astrai.scheduler import FieldError
from astrai.server import constraints
from astrai.server.body import read_model
from astrai.server.errors import APIError, bad_request
from astrai.server.file_search import run_file_search
from astrai.server.generation import ClientDisconnected, Generation, until_disconnect
from astrai.server.handlers import _CleanupStreamingResponse, _raise_if_failed, start_generation
from astrai.server.protocol import MAX_TOOLS, FunctionDefinition, StreamOptions, _Strict
from astrai.server.responses_api import (
    EventWriter,
    ResponseShell,
    function_call_item,
    message_item,
    new_id,
    usage,
)
from astrai.server.sampling import build_sampling_params, tenant_of
from astrai.server.service import Service
from astrai.server.tools import ToolCallParser
from pydantic import Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

ROLES = ("system", "developer", "user", "assistant")


class TextFormat(_Strict):
    type: str
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _known(self) -> TextFormat:
        if self.type not in ("text", "json_object", "json_schema"):
            raise FieldError("type", f"unsupported format {self.type!r}; use text, json_object or json_schema")
        if self.type == "json_schema" and self.schema_ is None:
            raise FieldError("schema", "required when type is json_schema")
        return self


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: str | None = None


class FunctionTool(FunctionDefinition):
    type: Literal["function"]


class ResponsesRequest(_Strict):
    model: str
    input: Any
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    truncation: str | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    service_tier: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValueError("must not be empty")
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("must be a string or a non-empty list of input items")
        return value

    @model_validator(mode="after")
    def _stateless(self) -> ResponsesRequest:
        if self.store:
            raise FieldError("store", "this server does not store responses; omit store or send false")
        if self.previous_response_id is not None:
            raise FieldError("previous_response_id", "this server does not store responses; send the whole "
                             "conversation as input")
        if self.conversation is not None:
            raise FieldError("conversation", "this server does not store conversations")
        if self.background:
            raise FieldError("background", "background responses are not supported")
        searches = 0
        for i, tool in enumerate(self.tools or ()):
            kind = tool.get("type") if isinstance(tool, dict) else tool
            if kind == "file_search":
                searches += 1
                if searches > 1:
                    raise FieldError(f"tools.{i}", "at most one file_search tool per request")
            elif kind != "function":
                raise FieldError(f"tools.{i}.type", f"built-in tool {kind!r} is not supported; only function tools "
                                 "and file_search")
        return self

    def file_search(self) -> tuple[int, dict[str, Any]] | None:
        """The file_search tool and its index in `tools`, if there is one."""
        return next(((i, t) for i, t in enumerate(self.tools or ()) if t.get("type") == "file_search"), None)

    def functions(self) -> list[dict[str, Any]]:
        out = []
        for i, tool in enumerate(self.tools or ()):
            if tool.get("type") == "file_search":
                continue
            try:
                f = FunctionTool.model_validate(tool, strict=True)
            except ValueError as exc:
                raise bad_request(f"tools.{i}: {str(exc).splitlines()[-1]}", f"tools.{i}") from None
            out.append(f.model_dump(exclude_none=True, exclude={"type"}))
        return out


def input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """Input items -> chat messages (instructions first, as a system message)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return [*messages, {"role": "user", "content": req.input}]
    for i, item in enumerate(req.input):
        where = f"input.{i}"
        if not isinstance(item, dict):
            raise bad_request(f"{where}: must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_request(f"{where}.role: unsupported role {role!r}; use {', '.join(ROLES)}", f"{where}.role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _item_text(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or new_id("call"), "type": "function",
                    "function": {"name": str(item.get("name")), "arguments": str(item.get("arguments") or "")}}
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id")),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise bad_request(f"{where}.type: input items of type {kind!r} are not supported", f"{where}.type")
    return messages


def _item_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise bad_request(f"{where}.content.{j}: only text parts are supported", f"{where}.content.{j}")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise bad_request(f"{where}.content: must be a string or a list of text parts", f"{where}.content")


async def create_response(request: Request) -> Response:
    service: Service = request.app.state.service
    req = await read_model(request, ResponsesRequest)
    service.check_model(req.model)
    engine = service.engine()
    functions = req.functions()
    messages = input_messages(req)
    tool_choice = req.tool_choice if req.tool_choice is not None else "auto"
    use_tools = bool(functions) and tool_choice != "none"
    named = tool_choice.get("name") if isinstance(tool_choice, dict) else None
    if named is not None and named not in {f["name"] for f in functions}:
        raise bad_request(f"tool_choice: function {named!r} is not among the tools", "tool_choice")
    constraint = None
    if use_tools and (tool_choice == "required" or named):
        constraint = constraints.for_tools(functions, named=named, parallel=req.parallel_tool_calls is not False)
    fmt = req.text.format if req.text and req.text.format else None
    if constraint is None and fmt is not None:
        constraint = constraints.from_format(fmt.type, fmt.schema_, "text.format")
    searched = req.file_search()
    search_run = None
    if searched is not None:
        where, tool = searched
        search_run = await run_file_search(request, engine, tool, messages, functions if use_tools else [],
                                           req.max_output_tokens, f"tools.{where}")
        prompt_ids = search_run.prompt.token_ids
    else:
        prompt_ids = await asyncio.to_thread(service.render_chat, engine, messages, functions if use_tools else [],
                                             "input")
    service.log_prompt(request, messages)
    max_tokens = service.fit_context(engine, [prompt_ids], req.max_output_tokens, "input")
    params = build_sampling_params(_SamplingView(req), max_tokens,
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
    cleanup, gone = await start_generation(request, service, gen, 1, log)
    if gone is not None:
        return gone
    names = {f["name"] for f in functions} if use_tools else set()
    search_item = None
    if search_run is not None:
        search_item = search_run.call_item(new_id("fs"), "file_search_call.results" in (req.include or ()))
    if req.stream:
        return _CleanupStreamingResponse(_events(gen, shell, names, constraint is not None and bool(names),
                                                 search_item), cleanup)
    try:
        (choice,) = await until_disconnect(request, gen.collect())
    except ClientDisconnected:
        return Response(status_code=499)
    finally:
        cleanup()
    _raise_if_failed(choice.finish_reason, choice.error)
    output: list[dict] = [search_item] if search_item else []
    parser = ToolCallParser(names)
    parser.feed(choice.text)
    parser.finish()
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    if parser.content.strip() or not parser.calls:
        output.append(message_item(new_id("msg"), parser.content, status))
    for call in parser.calls:
        output.append(function_call_item(new_id("fc"), call.id, call.name, call.arguments, "completed"))
    reason = "max_output_tokens" if choice.finish_reason == "length" else None
    body = shell.body(status, output, usage(len(choice.prompt_ids), len(choice.token_ids), choice.num_cached_tokens),
                      reason)
    return JSONResponse(body)


async def _events(gen: Generation, shell: ResponseShell, names: set[str], forced: bool,
                  search_item: dict | None = None) -> Any:
    writer = EventWriter(shell)
    parser = ToolCallParser(names, incremental=forced)
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
                _raise_if_failed(out.finish_reason, out.error)
                if all(item["type"] == "file_search_call" for item in writer.output):
                    for line in writer.text(""):
                        yield line
                choice = gen.choices[0]
                reason = "max_output_tokens" if out.finish_reason == "length" else None
                for line in writer.finish(usage(len(choice.prompt_ids), len(choice.token_ids),
                                                choice.num_cached_tokens), reason):
                    yield line
    except APIError as exc:
        yield writer.event("error", code=exc.code, message=exc.message, param=exc.param)


class _SamplingView:
    """A Responses request seen through the chat fields build_sampling_params reads."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.temperature, self.top_p, self.seed = req.temperature, req.top_p, req.seed
        self.min_p = self.presence_penalty = self.frequency_penalty = self.repetition_penalty = None
        self.min_tokens = self.ignore_eos = self.top_k = None
        self.stop_list = None
        self.num_logprobs = None
        self.token_bias = None
        self.speculation = None


async def stored_response(request: Request) -> Response:
    raise APIError(404, "Responses are not stored by this server, so none can be retrieved",
                   param="response_id", code="not_found")
