"""The retrieval side of one app: files, vector stores, search, and passage popularity."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from astrai.retrieval import PassagePopularity, RankingOptions, RetrievalInputError, SearchHit
from astrai.server.embedder import Embedder
from astrai.server.errors import APIError, bad_request
from astrai.server.rag.files import FileStore
from astrai.server.rag.stores import FileBatches, OpenStore, StoreRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

T = TypeVar("T")
logger = logging.getLogger("astrai.server")


class RagService:
    """Everything the file, vector-store and RAG handlers share. `start()` runs once the embedder
    is loaded (the stores check its id and dimension)."""

    def __init__(self, data_dir: Path, embedder: Embedder, max_file_bytes: int) -> None:
        self.data_dir = data_dir
        self.embedder = embedder
        self.max_file_bytes = max_file_bytes
        self.files = FileStore(data_dir / "files")
        self.stores = StoreRegistry(data_dir / "vector_stores", self.files, embedder)
        self.batches = FileBatches()
        self.popularity = PassagePopularity()
        self.rag_prompts = 0  # RAG requests served, and of their prompt tokens how many were cached
        self.rag_prompt_tokens = 0
        self.rag_cached_tokens = 0
        self._ready = threading.Event()
        self._error: str | None = None

    def start(self) -> None:
        """Open the stores in a thread once the embedder has loaded; requests get 503 until then."""
        threading.Thread(target=self._open, name="astrai-vector-stores", daemon=True).start()

    def _open(self) -> None:
        try:
            if not self.embedder.wait():
                raise RuntimeError("the embedding model failed to load")
            self.stores.open_all()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            logger.error("vector stores unavailable: %s", self._error)
        self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout) and self._error is None

    def check_ready(self) -> RagService:
        if not self._ready.is_set():
            raise APIError(503, "Vector stores are still opening; retry shortly", code="model_loading",
                           headers={"Retry-After": "1"})
        if self._error is not None:
            raise APIError(503, f"Vector stores are unavailable: {self._error}", code="vector_stores_unavailable")
        return self

    def close(self) -> None:
        self.stores.close()

    def snapshot(self) -> dict[str, int]:
        """Store sizes and RAG prompt counters (for /metrics and promo recordings)."""
        stores = self.stores.all() if self._ready.is_set() else []
        return {"vector_stores": len(stores),
                "passages": sum(len(s.index) for s in stores if s.index is not None),
                "files": sum(len(s.record.files) for s in stores), "rag_requests": self.rag_prompts,
                "rag_prompt_tokens": self.rag_prompt_tokens, "rag_cached_tokens": self.rag_cached_tokens}

    def record_prompt(self, prompt_tokens: int, cached_tokens: int) -> None:
        """Count one finished RAG request (event loop thread)."""
        self.rag_prompts += 1
        self.rag_prompt_tokens += prompt_tokens
        self.rag_cached_tokens += cached_tokens

    @staticmethod
    async def run(fn: Callable[..., T], *args: Any) -> T:
        """Disk work off the event loop thread."""
        return await asyncio.to_thread(fn, *args)

    async def search(self, store: OpenStore, query: str, k: int, options: RankingOptions,
                     filters: dict | None) -> list[SearchHit]:
        try:
            return await self.stores.search(store, query, k, options, filters)
        except RetrievalInputError as exc:  # e.g. a sparse search whose query has no indexable word
            param = exc.param or "query"
            raise bad_request(f"{param}: {exc}", param) from None

    def result_body(self, hit: SearchHit) -> dict:
        passage = hit.passage
        try:
            filename = self.files.get(passage.file_id).filename
        except Exception:  # the file was deleted while this search ran
            filename = ""
        return {"file_id": passage.file_id, "filename": filename, "score": hit.score,
                "attributes": dict(passage.metadata), "content": [{"type": "text", "text": passage.text}]}


class RagCollector(Collector):
    """`astrai:vector_store_passages`, `astrai:rag_requests`, `astrai:rag_prompt_tokens` and
    `astrai:rag_cached_prompt_tokens` (of which served from the prefix cache), read at scrape time."""

    def __init__(self, service: RagService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        snap = self.service.snapshot()
        yield GaugeMetricFamily("astrai:vector_stores", "Vector stores open.", value=snap["vector_stores"])
        yield GaugeMetricFamily("astrai:vector_store_passages", "Passages in all vector stores.",
                                value=snap["passages"])
        yield CounterMetricFamily("astrai:rag_requests", "Requests answered with file_search passages.",
                                  value=snap["rag_requests"])
        yield CounterMetricFamily("astrai:rag_prompt_tokens", "Prompt tokens of RAG requests.",
                                  value=snap["rag_prompt_tokens"])
        yield CounterMetricFamily("astrai:rag_cached_prompt_tokens", "Prompt tokens of RAG requests served from "
                                  "the prefix cache.", value=snap["rag_cached_tokens"])
