"""The `file_search` tool: search the named vector stores for the user's question and build the
RAG prompt. The Responses API takes it as a tool (`{"type": "file_search", "vector_store_ids":
[...]}`); chat completions take the same object as the request field `file_search` (with the
openai client: `extra_body={"file_search": {...}}`).

Our extension: `passage_order` "cache_aware" (default) or "relevance" (see rag.prompt).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from astrai.retrieval import SearchHit
from astrai.scheduler import EngineClient
from astrai.server.errors import bad_request, validation_message
from astrai.server.openai_models import StrictModel
from astrai.server.rag.prompt import RagPrompt, build_prompt
from astrai.server.rag.search_api import MAX_RESULTS, SearchRanking, check_filters
from astrai.server.rag.service import RagService
from pydantic import Field, ValidationError

DEFAULT_RESULTS = 5
MAX_STORES = 16


class FileSearch(StrictModel):
    type: Literal["file_search"] | None = None
    vector_store_ids: list[str] = Field(min_length=1, max_length=MAX_STORES)
    max_num_results: int | None = Field(None, ge=1, le=MAX_RESULTS)
    filters: dict[str, Any] | None = None
    ranking_options: SearchRanking | None = None
    passage_order: Literal["cache_aware", "relevance"] | None = None  # our extension

    def echo(self) -> dict[str, Any]:
        """The tool as a response lists it."""
        return {"type": "file_search", **self.model_dump(exclude_none=True, exclude={"type"})}


def parse(value: Any, param: str) -> FileSearch:
    if not isinstance(value, dict):
        raise bad_request(f"{param}: must be an object with vector_store_ids", param)
    try:
        return FileSearch.model_validate(value, strict=True)
    except ValidationError as exc:
        message, field = validation_message(exc.errors(include_url=False))
        where = f"{param}.{field}" if field else param
        raise bad_request(f"{param}.{message}" if field else f"{param}: {message}", where) from None


async def search(service: RagService, spec: FileSearch, query: str, param: str) -> list[SearchHit]:
    """The best passages for `query` over every named store (merged by score)."""
    if not query.strip():
        raise bad_request(f"{param}: file_search needs a user message with text to search for", param)
    stores = [service.stores.get(store_id) for store_id in spec.vector_store_ids]
    options = (spec.ranking_options or SearchRanking()).options()
    filters = check_filters(spec.filters, f"{param}.filters")
    k = spec.max_num_results or DEFAULT_RESULTS
    found = await asyncio.gather(*(service.search(store, query, k, options, filters) for store in stores))
    hits = sorted((h for hits in found for h in hits), key=lambda h: -h.score)
    return hits[:k]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


async def rag_prompt(service: RagService, engine: EngineClient, spec: FileSearch, messages: list[dict[str, Any]],
                     output_tokens: int | None, param: str, extra: dict[str, Any] | None = None,
                     ) -> tuple[str, RagPrompt]:
    """(the query searched, the prompt with the passages found)."""
    query = last_user_text(messages)
    hits = await search(service, spec, query, param)
    budget = engine.max_model_len - (output_tokens or min(256, engine.max_model_len // 4))

    def filename(file_id: str) -> str:
        try:
            return service.files.get(file_id).filename
        except Exception:  # deleted while this request ran
            return file_id

    # On the event loop: a few short tokenizations and radix lookups, and the popularity sketch stays
    # single-threaded.
    prompt = build_prompt(engine.tokenizer, messages, hits, filename, order=spec.passage_order or "cache_aware",
                          popularity=service.popularity, cached_prefix_len=engine.lookup_prefix, budget=budget,
                          extra=extra, param=param)
    return query, prompt


def result_items(service: RagService, prompt: RagPrompt) -> list[dict[str, Any]]:
    """The passages a prompt used, as `file_search_call.results` items."""
    items = []
    for hit in prompt.hits:
        body = service.result_body(hit)
        items.append({"file_id": body["file_id"], "filename": body["filename"], "score": body["score"],
                      "attributes": body["attributes"], "text": hit.passage.text})
    return items
