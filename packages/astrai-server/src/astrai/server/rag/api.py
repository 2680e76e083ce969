"""HTTP handlers for `/v1/files` and `/v1/vector_stores` in OpenAI's shapes.

Extensions to OpenAI's search (documented in the server README): `ranking_options.mode`
("hybrid" default, "dense", "sparse"), `ranking_options.fusion` ("rrf" default, "convex"),
`ranking_options.rrf_k`. `hybrid_search.embedding_weight` / `text_weight` weigh either fusion.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from astrai.retrieval import ChunkingSettings, RankingOptions, RetrievalInputError, parse_filter
from astrai.server.body import read_model
from astrai.server.errors import APIError, bad_request
from astrai.server.protocol import _Strict
from astrai.server.rag.files import PURPOSES
from astrai.server.rag.service import RagService
from astrai.server.rag.stores import FileBatch, OpenStore
from pydantic import Field, field_validator
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

T = TypeVar("T")
MAX_RESULTS = 50
_METADATA_KEY = re.compile(r"^.{1,64}$", re.S)


def rag(request: Request) -> RagService:
    return request.app.state.rag.check_ready()


def page(items: Sequence[T], key: Callable[[T], str], body: Callable[[T], dict], request: Request,
         default_limit: int) -> dict:
    """OpenAI's cursor list: `limit`, `order` (asc | desc by creation), `after` / `before` an id."""
    params = request.query_params
    try:
        limit = int(params.get("limit", default_limit))
    except ValueError:
        raise bad_request(f"limit: expected an integer, got {params.get('limit')!r}", "limit") from None
    if not 1 <= limit <= max(default_limit, 100):
        raise bad_request(f"limit: must be from 1 to {max(default_limit, 100)}, got {limit}", "limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"order: must be 'asc' or 'desc', got {order!r}", "order")
    rows = list(items) if order == "asc" else list(reversed(items))
    ids = [key(r) for r in rows]
    for name in ("after", "before"):
        cursor = params.get(name)
        if cursor is not None:
            if cursor not in ids:
                raise bad_request(f"{name}: no object with id {cursor!r} in this list", name)
            at = ids.index(cursor)
            rows, ids = (rows[at + 1 :], ids[at + 1 :]) if name == "after" else (rows[:at], ids[:at])
    kept = rows[:limit]
    return {"object": "list", "data": [body(r) for r in kept], "first_id": key(kept[0]) if kept else None,
            "last_id": key(kept[-1]) if kept else None, "has_more": len(rows) > limit}


# --- files -------------------------------------------------------------------------------------


async def upload_file(request: Request) -> Response:
    service = rag(request)
    limit = service.max_file_bytes
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise bad_request("file: missing; send the file as the multipart field 'file'", "file")
        if not isinstance(purpose, str):
            raise bad_request(f"purpose: missing; this server accepts {', '.join(PURPOSES)}", "purpose")
        if purpose not in PURPOSES:
            raise bad_request(f"purpose: {purpose!r} is not supported; this server accepts {', '.join(PURPOSES)}",
                              "purpose")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise APIError(413, f"file: larger than this server's limit of {limit} bytes", param="file",
                           code="file_too_large")
        if not data:
            raise bad_request("file: the file is empty", "file")
        name = (upload.filename or "upload.txt")[:255]
    finally:
        await form.close()
    record = await service.run(service.files.add, name, purpose, data)
    return JSONResponse(record.body())


async def list_files(request: Request) -> Response:
    service = rag(request)
    purpose = request.query_params.get("purpose")
    records = sorted(service.files.all(), key=lambda r: (r.created_at, r.id))
    if purpose is not None:
        records = [r for r in records if r.purpose == purpose]
    return JSONResponse(page(records, lambda r: r.id, lambda r: r.body(), request, 10000))


async def get_file(request: Request) -> Response:
    return JSONResponse(rag(request).files.get(request.path_params["file_id"]).body())


async def file_content(request: Request) -> Response:
    service = rag(request)
    file_id = request.path_params["file_id"]
    return Response(await service.run(service.files.content, file_id), media_type="application/octet-stream")


async def delete_file(request: Request) -> Response:
    service = rag(request)
    file_id = request.path_params["file_id"]
    service.files.get(file_id)
    await service.run(service.stores.forget_file, file_id)
    await service.run(service.files.delete, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


# --- vector stores -----------------------------------------------------------------------------


class StaticChunking(_Strict):
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class ChunkingStrategy(_Strict):
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


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("at most 16 keys")
    for key, item in value.items():
        if not _METADATA_KEY.match(key):
            raise ValueError(f"key {key[:80]!r} must be 1 to 64 characters")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"value of {key!r} is longer than 512 characters")
    return value


def _no_expiry(value: Any) -> Any:
    if value is not None:
        raise ValueError("vector stores on this server do not expire; omit expires_after")
    return value


class CreateStoreRequest(_Strict):
    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    file_ids: list[str] | None = Field(None, max_length=500)
    chunking_strategy: ChunkingStrategy | None = None
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_metadata(value)

    @field_validator("expires_after")
    @classmethod
    def _no_expiry(cls, value: Any) -> Any:
        return _no_expiry(value)


class UpdateStoreRequest(_Strict):
    name: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_metadata(value)

    @field_validator("expires_after")
    @classmethod
    def _no_expiry(cls, value: Any) -> Any:
        return _no_expiry(value)


class AttachRequest(_Strict):
    file_id: str
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


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


# --- file batches ------------------------------------------------------------------------------


class BatchFile(_Strict):
    file_id: str
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


class BatchRequest(_Strict):
    file_ids: list[str] | None = Field(None, min_length=1, max_length=2000)
    files: list[BatchFile] | None = Field(None, min_length=1, max_length=2000)
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)

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


# --- search ------------------------------------------------------------------------------------


class HybridSearch(_Strict):
    embedding_weight: float
    text_weight: float


class SearchRanking(_Strict):
    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: float | None = Field(None, ge=0.0)
    hybrid_search: HybridSearch | None = None
    mode: Literal["hybrid", "dense", "sparse"] | None = None  # our extension
    fusion: Literal["rrf", "convex"] | None = None  # our extension
    rrf_k: float | None = Field(None, gt=0)  # our extension

    def options(self) -> RankingOptions:
        """The astrai.retrieval ranking this asks for; a 400 naming the field if it is invalid."""
        mode = self.mode or "hybrid"
        weights = self.hybrid_search
        if weights is not None and mode != "hybrid":
            raise bad_request(f"ranking_options.hybrid_search: only for mode 'hybrid', not {mode!r}",
                              "ranking_options.hybrid_search")
        if self.fusion is not None and mode != "hybrid":
            raise bad_request(f"ranking_options.fusion: only for mode 'hybrid', not {mode!r}", "ranking_options.fusion")
        kind = mode if mode != "hybrid" else ("hybrid_convex" if self.fusion == "convex" else "hybrid_rrf")
        fields: dict[str, Any] = {"mode": kind, "score_threshold": self.score_threshold or 0.0}
        if weights is not None:
            fields["dense_weight"], fields["sparse_weight"] = weights.embedding_weight, weights.text_weight
        if self.rrf_k is not None:
            fields["rrf_k"] = self.rrf_k
        try:
            return RankingOptions(**fields)
        except RetrievalInputError as exc:
            param = (exc.param or "ranking_options").replace("dense_weight", "hybrid_search.embedding_weight")
            param = param.replace("sparse_weight", "hybrid_search.text_weight")
            message = str(exc).replace("dense_weight", "embedding_weight").replace("sparse_weight", "text_weight")
            raise bad_request(f"{param}: {message}", param) from None


class SearchRequest(_Strict):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=MAX_RESULTS)
    filters: dict[str, Any] | None = None
    ranking_options: SearchRanking | None = None
    rewrite_query: bool | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("must be a non-empty string (or a non-empty list of them)")
        return value

    @field_validator("rewrite_query")
    @classmethod
    def _no_rewrite(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("this server does not rewrite queries; send false or omit it")
        return value

    def text(self) -> str:
        return self.query if isinstance(self.query, str) else "\n".join(self.query)


def check_filters(filters: dict[str, Any] | None, param: str = "filters") -> dict[str, Any] | None:
    try:
        parse_filter(filters, param)
    except RetrievalInputError as exc:
        raise bad_request(f"{exc.param}: {exc}", exc.param) from None
    return filters


async def search_store(request: Request) -> Response:
    service = rag(request)
    store = service.stores.get(request.path_params["vector_store_id"])
    req = await read_model(request, SearchRequest)
    options = (req.ranking_options or SearchRanking()).options()
    filters = check_filters(req.filters)
    hits = await service.search(store, req.text(), req.max_num_results, options, filters)
    data = [service.result_body(hit) for hit in hits]
    return JSONResponse({"object": "vector_store.search_results.page", "search_query": [req.text()], "data": data,
                         "has_more": False, "next_page": None})
