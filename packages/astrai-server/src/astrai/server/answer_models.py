"""The shapes of this server's answers, for the OpenAPI document only.

Handlers build their bodies as plain dicts in OpenAI's shape (`openai_bodies`, `responses_events`,
the rag handlers); these models describe them to clients and gateways and are never used to
validate or filter what is sent. Every model allows fields beyond those listed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Described(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(Described):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorAnswer(Described):
    """Every error, OpenAI's shape; inside a stream, the last event before `[DONE]`."""

    error: ErrorDetail


class Usage(Described):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class ChatMessageOut(Described):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(Described):
    index: int
    message: ChatMessageOut
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class ChatCompletion(Described):
    """`stream: true` sends `chat.completion.chunk` events instead (text/event-stream)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(Described):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class TextCompletion(Described):
    """`stream: true` sends `text_completion` chunks instead (text/event-stream)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ResponseObject(Described):
    """`stream: true` sends the `response.*` events instead (text/event-stream)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None


class ModelCard(Described):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int | None = None


class ModelList(Described):
    object: Literal["list"]
    data: list[ModelCard]


class Health(Described):
    status: str
    model: str
    engine: dict[str, str]
    replicas: list[dict[str, Any]] | None = None


class Tokens(Described):
    count: int
    max_model_len: int
    tokens: list[int]


class Detokenized(Described):
    prompt: str


class EmbeddingList(Described):
    object: Literal["list"]
    data: list[dict[str, Any]]
    model: str
    usage: dict[str, int]


class OpenAIObject(Described):
    """A file, vector store, vector-store file or file batch, as OpenAI writes them."""

    id: str
    object: str


class ObjectPage(Described):
    """A page of a list: `data`, `first_id`, `last_id`, `has_more`."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    has_more: bool


class Deleted(Described):
    id: str
    object: str
    deleted: bool


class SearchResults(Described):
    object: Literal["vector_store.search_results.page"]
    search_query: list[str]
    data: list[dict[str, Any]]


ERROR_ANSWERS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer, "description": text}
    for status, text in ((400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Not found"),
                         (413, "Body too large"), (429, "Server full"), (503, "Model loading or engine unavailable"))
}
