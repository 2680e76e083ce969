"""`/v1/vector_stores`: stores, their files and file batches (ingestion is synchronous: a file is
`completed` or `failed` when the request that attached it is answered)."""

from __future__ import annotations

from typing import Any, Literal

from astrai.retrieval import ChunkingSettings, RetrievalInputError
from astrai.server.body import read_model
from astrai.server.errors import APIError, bad_request
from astrai.server.openai_models import StrictModel
from astrai.server.rag.common import check_metadata, page, rag
from astrai.server.rag.service import RagService
from astrai.server.rag.stores import FileBatch, OpenStore
from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class StaticChunking(StrictModel):
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class ChunkingStrategy(StrictModel):
    type: Literal["auto", "static"]
    static: StaticChunking | None = None


def _chunking(strategy: ChunkingStrategy | None, default: ChunkingSettings) -> ChunkingSettings:
    if strategy is None or strategy.type == "auto":
        return default
    if strategy.static is None:
        raise bad_request("chunking_strategy.static: required when type is 'static'", "chunking_strategy.static")
    try:
        return ChunkingSettings(strategy.static.max_chunk_size_tokens, strategy.static.chunk_overlap_tokens)
    except RetrievalInputError as exc:
        raise bad_request(f"{exc.param}: {exc}", exc.param) from None


def _no_expiry(value: Any) -> Any:
    if value is not None:
        raise ValueError("vector stores on this server do not expire; omit expires_after")
    return value


class CreateStoreRequest(StrictModel):
    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    file_ids: list[str] | None = Field(None, max_length=500)
    chunking_strategy: ChunkingStrategy | None = None
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @field_validator("expires_after")
    @classmethod
    def _no_expiry(cls, value: Any) -> Any:
        return _no_expiry(value)


class UpdateStoreRequest(StrictModel):
    name: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @field_validator("expires_after")
    @classmethod
    def _no_expiry(cls, value: Any) -> Any:
        return _no_expiry(value)


class AttachRequest(StrictModel):
    file_id: str
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


async def create_store(request: Request) -> Response:
    service = rag(request)
    req = await read_model(request, CreateStoreRequest)
    registry = service.stores
    chunking = _chunking(req.chunking_strategy, registry.default_chunking())
    for file_id in req.file_ids or ():
        service.files.get(file_id)  # 404 before anything is created
    store = await service.run(registry.create, req.name or "", req.metadata or {}, chunking, req.description)
    for file_id in req.file_ids or ():
        try:
            await registry.attach(store, file_id, {})
        except APIError:  # as OpenAI: the store exists; that file is listed as failed, with its last_error
            pass
    return JSONResponse(store.record.body())


async def list_stores(request: Request) -> Response:
    stores = sorted(rag(request).stores.all(), key=lambda s: (s.record.created_at, s.record.id))
    return JSONResponse(page(stores, lambda s: s.record.id, lambda s: s.record.body(), request, 20))


async def get_store(request: Request) -> Response:
    return JSONResponse(rag(request).stores.get(request.path_params["vector_store_id"]).record.body())


async def update_store(request: Request) -> Response:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    req = await read_model(request, UpdateStoreRequest)
    with store.lock:
        if req.name is not None:
            store.record.name = req.name
        if req.metadata is not None:
            store.record.metadata = req.metadata
        await service.run(store.save)
    return JSONResponse(store.record.body())


async def delete_store(request: Request) -> Response:
    service = rag(request)
    store_id = request.path_params["vector_store_id"]
    await service.run(service.stores.delete, store_id)
    return JSONResponse({"id": store_id, "object": "vector_store.deleted", "deleted": True})


def _check_chunking(service: RagService, store: OpenStore, strategy: ChunkingStrategy | None) -> None:
    """A store cuts every file the same way: other chunking settings on attach are a 400."""
    if strategy is None:
        return
    wanted = _chunking(strategy, service.stores.default_chunking())
    have = (store.record.max_chunk_size_tokens, store.record.chunk_overlap_tokens)
    if (wanted.max_chunk_size_tokens, wanted.chunk_overlap_tokens) != have:
        raise bad_request(f"chunking_strategy: this vector store cuts every file into chunks of {have[0]} tokens "
                          f"overlapping by {have[1]}; create another store for other settings", "chunking_strategy")


async def attach_file(request: Request) -> Response:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    req = await read_model(request, AttachRequest)
    _check_chunking(service, store, req.chunking_strategy)
    attached = await service.stores.attach(store, req.file_id, req.attributes or {})
    return JSONResponse(attached.body(store.record))


async def list_store_files(request: Request) -> Response:
    store = rag(request).stores.get(request.path_params["vector_store_id"])
    status = request.query_params.get("filter")
    files = sorted(store.record.files.values(), key=lambda f: (f.created_at, f.file_id))
    if status is not None:
        files = [f for f in files if f.status == status]
    return JSONResponse(page(files, lambda f: f.file_id, lambda f: f.body(store.record), request, 20))


async def get_store_file(request: Request) -> Response:
    store = rag(request).stores.get(request.path_params["vector_store_id"])
    file_id = request.path_params["file_id"]
    attached = store.record.files.get(file_id)
    if attached is None:
        raise APIError(404, f"File {file_id!r} is not in vector store {store.record.id!r}", param="file_id",
                       code="not_found")
    return JSONResponse(attached.body(store.record))


async def detach_file(request: Request) -> Response:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    file_id = request.path_params["file_id"]
    await service.run(service.stores.detach, store, file_id)
    return JSONResponse({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})


class BatchFile(StrictModel):
    file_id: str
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


class BatchRequest(StrictModel):
    file_ids: list[str] | None = Field(None, min_length=1, max_length=2000)
    files: list[BatchFile] | None = Field(None, min_length=1, max_length=2000)
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)

    def entries(self) -> list[BatchFile]:
        if (self.file_ids is None) == (self.files is None):
            raise bad_request("file_ids: give exactly one of file_ids and files", "file_ids")
        if self.files is not None:
            return self.files
        return [BatchFile(file_id=f, attributes=self.attributes, chunking_strategy=self.chunking_strategy)
                for f in self.file_ids or ()]


async def create_batch(request: Request) -> Response:
    """Attach several files; answered once all are ingested (each completed or failed)."""
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    entries = (await read_model(request, BatchRequest)).entries()
    for entry in entries:
        service.files.get(entry.file_id)
        _check_chunking(service, store, entry.chunking_strategy)
    batch = service.batches.new(store.record.id, [e.file_id for e in entries])
    for entry in entries:
        try:
            await service.stores.attach(store, entry.file_id, entry.attributes or {})
        except APIError:  # that file is listed as failed, with its last_error
            pass
    return JSONResponse(service.batches.body(batch, store.record))


def _batch(request: Request) -> tuple[RagService, OpenStore, FileBatch]:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    return service, store, service.batches.get(store.record.id, request.path_params["batch_id"])


async def get_batch(request: Request) -> Response:
    service, store, batch = _batch(request)
    return JSONResponse(service.batches.body(batch, store.record))


async def list_batch_files(request: Request) -> Response:
    _, store, batch = _batch(request)
    files = [store.record.files[f] for f in batch.file_ids if f in store.record.files]
    status = request.query_params.get("filter")
    if status is not None:
        files = [f for f in files if f.status == status]
    return JSONResponse(page(files, lambda f: f.file_id, lambda f: f.body(store.record), request, 20))
