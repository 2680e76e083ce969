"""The Responses API's request: its wire model, and its input items translated to chat messages.

Stateless: nothing is stored, so `store: true`, `previous_response_id`, `conversation` and
`background` are refused, as are built-in tools other than `file_search`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from astrai.scheduler import FieldError
from astrai.server.errors import bad_request
from astrai.server.openai_models import (
    MAX_TOOLS,
    FunctionDefinition,
    StreamOptions,
    StrictModel,
    text_or_items,
)
from astrai.server.responses_events import new_id
from pydantic import Field, field_validator, model_validator

ROLES = ("system", "developer", "user", "assistant")
# the OpenAPI document's view of `input`: a string or a list of input items
INPUT_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {
    "type": "object", "properties": {"type": {"enum": ["message", "function_call", "function_call_output"]},
                                     "role": {"enum": list(ROLES)}, "content": {"type": "string"}}}}]}


class TextFormat(StrictModel):
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


class TextConfig(StrictModel):
    format: TextFormat | None = None
    verbosity: str | None = None


class FunctionTool(FunctionDefinition):
    type: Literal["function"]


class ResponsesRequest(StrictModel):
    model: str
    input: Any = Field(json_schema_extra=INPUT_SCHEMA)  # checked by `_input` and `input_messages`
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
        return text_or_items(value, "must be a string or a non-empty list of input items")

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


@dataclass(frozen=True)
class ResponsesSampling:
    """A Responses request seen through the fields `build_sampling_params` reads (`SamplingFieldsView`):
    the Responses API sets temperature, top_p and seed; the rest are chat-only and stay unset."""

    temperature: float | None
    top_p: float | None
    seed: int | None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_list: list[str] | None = None
    num_logprobs: int | None = None
    token_bias: dict[int, float] | None = None
    speculation: bool | None = None

    @classmethod
    def of(cls, req: ResponsesRequest) -> ResponsesSampling:
        return cls(temperature=req.temperature, top_p=req.top_p, seed=req.seed)
