"""Vector stores on disk: OpenAI's records around astrai.retrieval's durable `VectorStore` folders.

    <data>/vector_stores/<vs_id>/store.json   id, name, created_at, metadata, chunking, attached files
    <data>/vector_stores/<vs_id>/index/       the VectorStore (settings, snapshot, write-ahead log)

Attaching a file: its record is saved as `in_progress`, its text is cut into chunks (in the
embedder's tokens), embedded through the shared batching queue, and upserted; `upsert` returns
once the passages are fsynced and searchable, and only then is the record saved as
`completed` and the request answered. A file whose record says `in_progress` at start-up was
interrupted: its passages (some may be there) are removed and it is marked `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from astrai.retrieval import (
    Chunk,
    ChunkingSettings,
    Passage,
    RankingOptions,
    RetrievalError,
    SearchHit,
    StoreSettings,
    VectorStore,
    chunk_text,
)
from astrai.server.embedder import Embedder
from astrai.server.errors import APIError, bad_request
from astrai.server.rag.durable import read_json, write_json
from astrai.server.rag.files import FileStore

logger = logging.getLogger("astrai.server")


@dataclass
class AttachedFile:
    file_id: str
    created_at: int
    status: str  # in_progress | completed | failed
    attributes: dict[str, Any] = field(default_factory=dict)
    usage_bytes: int = 0
    passages: int = 0
    last_error: dict[str, str] | None = None

    def body(self, store: StoreRecord) -> dict:
        return {"id": self.file_id, "object": "vector_store.file", "created_at": self.created_at,
                "vector_store_id": store.id, "status": self.status, "usage_bytes": self.usage_bytes,
                "last_error": self.last_error, "attributes": self.attributes,
                "chunking_strategy": {"type": "static", "static": store.chunking_body()}}


@dataclass
class StoreRecord:
    id: str
    name: str
    created_at: int
    metadata: dict[str, str]
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int
    description: str | None = None
    last_active_at: int = 0
    files: dict[str, AttachedFile] = field(default_factory=dict)

    def chunking_body(self) -> dict:
        return {"max_chunk_size_tokens": self.max_chunk_size_tokens, "chunk_overlap_tokens": self.chunk_overlap_tokens}

    def body(self) -> dict:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for f in self.files.values():
            counts[f.status] += 1
        return {"id": self.id, "object": "vector_store", "created_at": self.created_at, "name": self.name,
                "description": self.description, "usage_bytes": sum(f.usage_bytes for f in self.files.values()),
                "file_counts": {**counts, "total": len(self.files)},
                "status": "in_progress" if counts["in_progress"] else "completed",
                "expires_after": None, "expires_at": None, "last_active_at": self.last_active_at or self.created_at,
                "metadata": self.metadata}

    @classmethod
    def load(cls, data: dict) -> StoreRecord:
        files = {k: AttachedFile(**v) for k, v in data.pop("files").items()}
        return cls(**data, files=files)


class OpenStore:
    """One store: its record, its index (or why the index cannot be opened), and a writer lock."""

    def __init__(self, folder: Path, record: StoreRecord, index: VectorStore | None, problem: str | None) -> None:
        self.folder = folder
        self.record = record
        self.index = index
        self.problem = problem
        self.lock = threading.Lock()  # serialises record updates

    def save(self) -> None:
        write_json(self.folder / "store.json", asdict(self.record))

    def usable(self) -> VectorStore:
        if self.index is None:
            raise APIError(409, f"Vector store {self.record.id!r} cannot be used: {self.problem}",
                           code="vector_store_unusable")
        return self.index


class StoreRegistry:
    """Every vector store of a data folder, opened at start-up."""

    def __init__(self, folder: Path, files: FileStore, embedder: Embedder) -> None:
        self.folder = folder
        self.files = files
        self.embedder = embedder
        folder.mkdir(parents=True, exist_ok=True)
        self._stores: dict[str, OpenStore] = {}
        self._lock = threading.Lock()

    # --- start-up -------------------------------------------------------------------------

    def open_all(self) -> None:
        """Open every store folder (after the embedder loaded: its id and dimension are checked)."""
        for entry in sorted(self.folder.iterdir()):
            record_path = entry / "store.json"
            if not record_path.is_file():
                shutil.rmtree(entry, ignore_errors=True)  # a create that never finished
                continue
            record = StoreRecord.load(read_json(record_path))
            index, problem = None, None
            try:
                index = VectorStore.open(entry / "index", self._settings(record))
            except RetrievalError as exc:
                problem = str(exc)
                logger.error("vector store %s cannot be opened: %s", record.id, problem)
            store = OpenStore(entry, record, index, problem)
            interrupted = [f for f in record.files.values() if f.status == "in_progress"]
            for f in interrupted:
                if index is not None:
                    index.delete_file(f.file_id)
                f.status = "failed"
                f.last_error = {"code": "server_error", "message": "interrupted by a server restart; attach the file "
                                                                  "again"}
            if interrupted:
                store.save()
            self._stores[record.id] = store
        logger.info("%d vector store(s) open in %s", len(self._stores), self.folder)

    def _settings(self, record: StoreRecord) -> StoreSettings:
        encoder = self.embedder.encoder()
        return StoreSettings(embedder_id=self.embedder.name, dimension=encoder.dimension,
                             max_chunk_size_tokens=record.max_chunk_size_tokens,
                             chunk_overlap_tokens=record.chunk_overlap_tokens)

    def default_chunking(self) -> ChunkingSettings:
        """`auto`: chunks as long as the embedder reads ([CLS]/[SEP] aside), a quarter overlapping."""
        size = max(100, min(800, self.embedder.encoder().max_seq_length - 2))
        return ChunkingSettings(size, size // 4)

    # --- stores ---------------------------------------------------------------------------

    def create(self, name: str, metadata: dict[str, str], chunking: ChunkingSettings, description: str | None,
               ) -> OpenStore:
        record = StoreRecord(id=f"vs_{uuid.uuid4().hex}", name=name, created_at=int(time.time()), metadata=metadata,
                             max_chunk_size_tokens=chunking.max_chunk_size_tokens,
                             chunk_overlap_tokens=chunking.chunk_overlap_tokens, description=description)
        folder = self.folder / record.id
        folder.mkdir()
        index = VectorStore.create(folder / "index", self._settings(record))
        store = OpenStore(folder, record, index, None)
        store.save()  # the store exists from here on
        with self._lock:
            self._stores[record.id] = store
        return store

    def get(self, store_id: str) -> OpenStore:
        with self._lock:
            store = self._stores.get(store_id)
        if store is None:
            raise APIError(404, f"No such vector store: {store_id!r}", param="vector_store_id", code="not_found")
        return store

    def all(self) -> list[OpenStore]:
        with self._lock:
            return list(self._stores.values())

    def delete(self, store_id: str) -> None:
        store = self.get(store_id)
        with self._lock:
            self._stores.pop(store_id, None)
        (store.folder / "store.json").unlink(missing_ok=True)
        if store.index is not None:
            store.index.close()
        shutil.rmtree(store.folder, ignore_errors=True)

    def close(self) -> None:
        for store in self.all():
            if store.index is not None:
                store.index.close()

    # --- files ----------------------------------------------------------------------------

    async def attach(self, store: OpenStore, file_id: str, attributes: dict[str, Any]) -> AttachedFile:
        """Ingest `file_id` into `store`; returns once its passages are durable and searchable.

        Shielded: a client that hangs up does not cut an ingestion short, so a file's record never
        says `failed` while its passages land anyway."""
        return await asyncio.shield(asyncio.ensure_future(self._ingest(store, file_id, attributes)))

    async def _ingest(self, store: OpenStore, file_id: str, attributes: dict[str, Any]) -> AttachedFile:
        index = store.usable()
        self.files.get(file_id)
        text = await asyncio.to_thread(self.files.text, file_id)
        attached = await asyncio.to_thread(self._begin, store, index, file_id, attributes)
        try:
            chunks = chunk_text(text, ChunkingSettings(store.record.max_chunk_size_tokens,
                                                       store.record.chunk_overlap_tokens), self.token_spans)
            if not chunks:
                raise bad_request(f"file {file_id!r} holds no text to search", "file_id", code="invalid_file")
            vectors = await self.embedder.embed(self.embedder.truncated_ids([c.text for c in chunks]))
            passages = [Passage(id=passage_id(file_id, c), file_id=file_id, text=c.text, vector=v,
                                metadata=attributes) for c, v in zip(chunks, vectors, strict=True)]
            await asyncio.to_thread(index.upsert, passages)
        except Exception as exc:
            code = exc.code if isinstance(exc, APIError) and exc.code == "invalid_file" else "server_error"
            await asyncio.to_thread(self._end, store, attached, "failed",
                                    {"code": code, "message": str(exc) or type(exc).__name__})
            raise
        attached.passages = len(passages)
        attached.usage_bytes = sum(len(c.text.encode()) for c in chunks)
        await asyncio.to_thread(self._end, store, attached, "completed", None)
        return attached

    @staticmethod
    def _begin(store: OpenStore, index: VectorStore, file_id: str, attributes: dict[str, Any]) -> AttachedFile:
        """Record the file as in_progress (durably) before any of its passages is written."""
        with store.lock:
            if file_id in store.record.files:
                index.delete_file(file_id)  # attaching again replaces the file's passages
            attached = AttachedFile(file_id=file_id, created_at=int(time.time()), status="in_progress",
                                    attributes=attributes)
            store.record.files[file_id] = attached
            store.save()
        return attached

    @staticmethod
    def _end(store: OpenStore, attached: AttachedFile, status: str, error: dict[str, str] | None) -> None:
        with store.lock:
            attached.status = status
            attached.last_error = error
            store.record.last_active_at = int(time.time())
            store.save()

    def detach(self, store: OpenStore, file_id: str) -> None:
        if file_id not in store.record.files:
            raise APIError(404, f"File {file_id!r} is not in vector store {store.record.id!r}", param="file_id",
                           code="not_found")
        with store.lock:
            if store.index is not None:
                store.index.delete_file(file_id)
            del store.record.files[file_id]
            store.save()

    def forget_file(self, file_id: str) -> None:
        """A deleted file leaves every store."""
        for store in self.all():
            if file_id in store.record.files:
                self.detach(store, file_id)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoding = self.embedder.encoder().tokenizer.encode(text, add_special_tokens=False)
        return list(encoding.offsets)

    # --- search ---------------------------------------------------------------------------

    async def search(self, store: OpenStore, query: str, k: int, options: RankingOptions,
                     filters: dict | None) -> list[SearchHit]:
        index = store.usable()
        vector = None
        if options.uses_dense:
            vector = (await self.embedder.embed(self.embedder.truncated_ids([query])))[0]
        hits = await asyncio.to_thread(index.search, query, vector, k=k, options=options, filter=filters)
        store.record.last_active_at = int(time.time())
        return hits


@dataclass
class FileBatch:
    id: str
    vector_store_id: str
    created_at: int
    file_ids: list[str]


class FileBatches:
    """File batches by id, in memory: the files' own records in the store are the durable part."""

    def __init__(self) -> None:
        self._batches: dict[str, FileBatch] = {}

    def new(self, store_id: str, file_ids: list[str]) -> FileBatch:
        batch = FileBatch(f"vsfb_{uuid.uuid4().hex}", store_id, int(time.time()), list(dict.fromkeys(file_ids)))
        self._batches[batch.id] = batch
        return batch

    def get(self, store_id: str, batch_id: str) -> FileBatch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.vector_store_id != store_id:
            raise APIError(404, f"No such file batch in vector store {store_id!r}: {batch_id!r}", param="batch_id",
                           code="not_found")
        return batch

    @staticmethod
    def body(batch: FileBatch, store: StoreRecord) -> dict:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for file_id in batch.file_ids:
            attached = store.files.get(file_id)
            counts[attached.status if attached is not None else "cancelled"] += 1
        return {"id": batch.id, "object": "vector_store.files_batch", "created_at": batch.created_at,
                "vector_store_id": batch.vector_store_id,
                "status": "in_progress" if counts["in_progress"] else "completed",
                "file_counts": {**counts, "total": len(batch.file_ids)}}


def passage_id(file_id: str, chunk: Chunk) -> str:
    return f"{file_id}:{chunk.index}"
