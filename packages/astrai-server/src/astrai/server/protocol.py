"""Request models for the OpenAI endpoints, validated strictly so bad input becomes a 400.

Strict mode: "5" is not an int and 1.0 is not a max_tokens. Unknown fields are rejected the way
OpenAI does ("Unrecognized request argument supplied"); a few harmless OpenAI fields are accepted
and ignored, and features this server does not implement are refused with a message saying so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_SEQUENCES = 16
MAX_TOP_LOGPROBS = 20
SEED_MAX = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _SamplingFields(_Strict):
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
    n: int | None = None
    user: str | None = None
    # Accepted and ignored: they do not change what is generated.
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    # Refused unless empty: this server cannot honour them.
    logit_bias: dict[str, Any] | None = None

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
        if self.n is not None and self.n != 1:
            raise ValueError("n: only n=1 is supported by this server")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported by this server")
        return self

    @property
    def stop_list(self) -> list[str] | None:
        return self.stop

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: str
    content: Any = None
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"unsupported role {value!r}; use system, developer, user or assistant")
        return value

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

    def as_dict(self) -> dict[str, str]:
        """The message as a chat template sees it; OpenAI's "developer" role is the system role."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [m.as_dict() for m in messages]


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    parallel_tool_calls: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _chat_checks(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs to be true")
        if self.tools:
            raise ValueError("tools: tool calling is not supported by this server")
        if self.tool_choice not in (None, "none"):
            raise ValueError("tool_choice: tool calling is not supported by this server")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("response_format: only {'type': 'text'} is supported by this server")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def message_dicts(self) -> list[dict[str, str]]:
        return message_dicts(self.messages)


class CompletionRequest(_SamplingFields):
    prompt: Any
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool | None = False
    best_of: int | None = None
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
        if self.best_of not in (None, 1):
            raise ValueError("best_of: only best_of=1 is supported by this server")
        if self.suffix:
            raise ValueError("suffix: not supported by this server")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo: cannot be combined with logprobs (prompt logprobs are not supported)")
        return self

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


class TokenizeRequest(_Strict):
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


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
