"""Request models for the OpenAI endpoints, validated strictly so bad input becomes a 400.

Strict mode: "5" is not an int and 1.0 is not a max_tokens. Unknown fields are rejected the way
OpenAI does ("Unrecognized request argument supplied"); a few harmless OpenAI fields are accepted
and ignored, and features this server does not implement are refused with a message saying so.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from astrai.scheduler import FieldError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_SEQUENCES = 16
MAX_TOP_LOGPROBS = 20
SEED_MAX = 2**63 - 1
MAX_N = 16  # choices per prompt (OpenAI allows 128; each one is a sequence in the batch)
MAX_TOOLS = 128  # OpenAI's limit on tools per request
MAX_LOGIT_BIAS = 300  # OpenAI's limit on logit_bias entries
ROLES = ("system", "developer", "user", "assistant", "tool")
# JSON Schema of fields typed `Any` (their validators accept several shapes), for the OpenAPI document
TEXT_PART = {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
             "required": ["type", "text"]}
TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
PROMPT_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "items": {"type": "string"}, "minItems": 1}, TOKEN_IDS,
                           {"type": "array", "items": TOKEN_IDS, "minItems": 1}]}
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def text_or_items(value: Any, items_error: str) -> Any:
    """An `input` field's first check: a non-empty string (returned as is), or a non-empty list
    (returned for the caller to check its items); anything else raises `items_error`."""
    if isinstance(value, str):
        if not value:
            raise ValueError("must not be empty")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(items_error)
    return value


class StreamOptions(StrictModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _SamplingFields(StrictModel):
    """Fields shared by chat and completions requests."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    stop: Any = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=MAX_N)
    user: str | None = None
    # Accepted and ignored: they do not change what is generated.
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    logit_bias: dict[str, Any] | None = None
    # vLLM's extra parameter for constraints OpenAI has no field for: choice, regex, grammar, json...
    structured_outputs: dict[str, Any] | None = None
    # AstrAI's extra parameter (extra_body): false opts this request out of speculative decoding
    speculation: bool | None = None

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _logit_bias(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("must be an object mapping token ids (as strings) to a bias in [-100, 100]")
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries are allowed, got {len(value)}")
        out: dict[str, Any] = {}
        for key, bias in value.items():
            if not re.fullmatch(r"-?[0-9]{1,12}", key) or int(key) < 0:
                raise ValueError(f"key {key!r} is not a token id (a non-negative integer)")
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
                raise ValueError(f"bias {bias!r} for token {key} must be a number in [-100, 100]")
            out[key] = bias
        return out

    @field_validator("structured_outputs", mode="before")
    @classmethod
    def _structured_outputs(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("must be an object such as {\"choice\": [...]}, {\"regex\": ...} or {\"json\": {...}}")
        known = {"json", "json_object", "regex", "choice", "grammar", "whitespace_pattern"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unsupported key {unknown[0]!r}; use one of {', '.join(sorted(known))}")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a string or a list of strings")
        if len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported, got {len(value)}")
        if any(s == "" for s in value):
            raise ValueError("stop sequences must not be empty")
        return value

    @model_validator(mode="after")
    def _common_checks(self) -> _SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "only allowed when stream is true")
        return self

    @property
    def num_choices(self) -> int:
        return self.n or 1

    @property
    def token_bias(self) -> dict[int, float] | None:
        return {int(k): float(v) for k, v in self.logit_bias.items()} if self.logit_bias else None

    @property
    def stop_list(self) -> list[str] | None:
        return self.stop

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class FunctionCall(StrictModel):
    name: str
    arguments: str


class ToolCallMessage(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    role: str = Field(json_schema_extra={"enum": list(ROLES)})  # checked by `_role`, which names the choices
    content: Any = Field(None, json_schema_extra={"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART},
                                                            {"type": "null"}]})
    name: str | None = None
    tool_calls: list[ToolCallMessage] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool result answers this call
    refusal: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"unsupported role {value!r}; use system, developer, user, assistant or tool")
        return value

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise FieldError("tool_calls", "only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise FieldError("tool_call_id", "a tool message needs the tool_call_id it answers")
        return self

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):
            parts = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
                parts.append(TextPart.model_validate(part, strict=True))
            return parts
        raise ValueError("must be a string or a list of text parts")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_dict(self) -> dict[str, Any]:
        """The message as a chat template sees it; OpenAI's "developer" role is the system role."""
        d: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.function.name,
                                "arguments": c.function.arguments}} for c in self.tool_calls]
        if self.tool_call_id:
            d["tool_call_id"] = self.tool_call_id
        return d


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.as_dict() for m in messages]


class FunctionDefinition(StrictModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FUNCTION_NAME.match(value):
            raise ValueError(f"name {value[:80]!r} must be 1-64 letters, digits, underscores or dashes")
        return value


class ToolDefinition(StrictModel):
    type: str
    function: FunctionDefinition | None = None

    @model_validator(mode="after")
    def _function_only(self) -> ToolDefinition:
        if self.type != "function":
            raise FieldError("type", f"only function tools are supported, got {self.type!r}")
        if self.function is None:
            raise FieldError("function", "a function tool needs its definition")
        return self


class JsonSchemaFormat(StrictModel):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictModel):
    type: str
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _known(self) -> ResponseFormat:
        if self.type not in ("text", "json_object", "json_schema"):
            raise FieldError("type", f"unsupported response_format type {self.type!r}; use text, json_object or "
                             "json_schema")
        if self.type == "json_schema" and self.json_schema is None:
            raise FieldError("json_schema", "required when type is json_schema")
        return self


def check_tool_choice(tool_choice: Any, tools: list[ToolDefinition] | None) -> None:
    """Validate tool_choice against the tools (raises ValueError starting with the field name)."""
    if tool_choice is None or tool_choice == "none":
        return
    names = {t.function.name for t in tools or () if t.function is not None}
    if tool_choice in ("auto", "required"):
        if tool_choice == "required" and not names:
            raise FieldError("tool_choice", "'required' needs at least one entry in tools")
        return
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tool_choice.get("name")
        if not isinstance(name, str) or name not in names:
            raise FieldError("tool_choice", f"function {name!r} is not among the tools")
        return
    raise FieldError("tool_choice", "must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
                     "{'name': ...}}")


def named_tool(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        return fn.get("name") if isinstance(fn, dict) else tool_choice.get("name")
    return None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    parallel_tool_calls: bool | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Any = None
    response_format: ResponseFormat | None = None
    # Our extension (extra_body): RAG over this server's vector stores, the Responses file_search tool's fields.
    file_search: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _chat_checks(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "requires logprobs to be true")
        check_tool_choice(self.tool_choice, self.tools)
        if self.structured_outputs and self.response_format and self.response_format.type != "text":
            raise FieldError("structured_outputs", "give either response_format or structured_outputs, not both")
        return self

    @property
    def functions(self) -> list[dict[str, Any]]:
        return [t.function.model_dump(exclude_none=True) for t in self.tools or () if t.function is not None]

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def message_dicts(self) -> list[dict[str, Any]]:
        return message_dicts(self.messages)


class CompletionRequest(_SamplingFields):
    prompt: Any = Field(json_schema_extra=PROMPT_SCHEMA)  # checked by `_prompt`
    max_tokens: int | None = Field(None, ge=0)  # 0 only with echo: score the prompt
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        message = "must be a string, a list of strings, a list of token ids or a list of token-id lists"
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValueError(message if not isinstance(value, list) else "must not be an empty list")
        if all(isinstance(p, str) for p in value):
            return value
        if all(_is_token(t) for t in value):
            return value
        if all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in value):
            return value
        raise ValueError(message)

    @model_validator(mode="after")
    def _completion_checks(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of < self.num_choices:
            raise FieldError("best_of", f"must be >= n ({self.num_choices}), got {self.best_of}")
        if self.best_of is not None and self.best_of > 1 and self.stream:
            raise FieldError("best_of", "cannot be used with stream")
        if self.suffix:
            raise FieldError("suffix", "not supported by this server")
        if self.max_tokens == 0 and not self.echo:
            raise FieldError("max_tokens", "0 is only allowed together with echo (to score the prompt)")
        return self

    @property
    def num_candidates(self) -> int:
        """Samples to generate per prompt: best_of, of which the n most likely are returned."""
        return max(self.best_of or 1, self.num_choices)

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of independent prompts (one choice each)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, str) for x in p):
            return list(p)
        if all(_is_token(t) for t in p):
            return [list(p)]
        return [list(x) for x in p]


class TokenizeRequest(StrictModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool | None = True
    add_special_tokens: bool | None = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(StrictModel):
    model: str | None = None
    tokens: list[int]


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
