"""RAG for the generation endpoints: the Responses `file_search` tool and chat's `file_search` field.

This module never imports astrai.retrieval itself: `astrai.server.rag` is imported only when a
request asks for file_search on a server where the rag extra is mounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from astrai.scheduler import EngineClient, RequestMetrics
from astrai.server.errors import bad_request
from astrai.server.tools import prepare_messages
from starlette.requests import Request

if TYPE_CHECKING:
    from astrai.server.rag import RagService
    from astrai.server.rag.prompt import RagPrompt
    from astrai.server.rag.tool import FileSearch


@dataclass
class FileSearchRun:
    """What one request's file_search did: the query, the tool as given, the prompt it built."""

    service: RagService
    spec: FileSearch
    query: str
    prompt: RagPrompt

    def results(self) -> list[dict[str, Any]]:
        from astrai.server.rag.tool import result_items

        return result_items(self.service, self.prompt)

    def call_item(self, item_id: str, with_results: bool) -> dict[str, Any]:
        """The Responses output item (`results` only when the request includes them, as OpenAI)."""
        return {"id": item_id, "type": "file_search_call", "status": "completed", "queries": [self.query],
                "results": self.results() if with_results else None}

    def counted(self, on_finish: Callable[[RequestMetrics | None, str | None], None],
                ) -> Callable[[RequestMetrics | None, str | None], None]:
        """`on_finish` that also counts this RAG prompt's cached tokens (for /metrics and promo)."""

        def finish(metrics: RequestMetrics | None, reason: str | None) -> None:
            on_finish(metrics, reason)
            if metrics is not None:
                self.service.record_prompt(metrics.num_prompt_tokens, metrics.num_cached_tokens)

        return finish


async def run_file_search(request: Request, engine: EngineClient, tool: Any, messages: list[dict[str, Any]],
                          functions: list[dict[str, Any]], output_tokens: int | None, param: str) -> FileSearchRun:
    """Search and build the prompt; a 400 naming `param` if file_search is not available here."""
    service: RagService | None = request.app.state.rag
    if service is None:
        raise bad_request(f"{param}: file_search is not available: {request.app.state.rag_problem}", param)
    from astrai.server.rag import tool as file_search

    spec = file_search.parse(tool, param)
    service.check_ready()
    prepared, extra = prepare_messages(messages, functions, engine.tokenizer.chat_template)
    query, prompt = await file_search.rag_prompt(service, engine, spec, prepared, output_tokens, param, extra)
    return FileSearchRun(service, spec, query, prompt)
