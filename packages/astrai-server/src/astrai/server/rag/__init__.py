"""Files, vector stores and RAG for the server: the `astrai-server[rag]` extra.

Imported only when the extra is installed and the server has a data folder and an embedding
model (`install`); serving without it never imports `astrai.retrieval`.
"""

from __future__ import annotations

from pathlib import Path

from astrai.server.answer_models import Deleted, ObjectPage, OpenAIObject, SearchResults
from astrai.server.embedder import Embedder
from astrai.server.openapi import json_answer, json_body, multipart_body
from astrai.server.rag import files_api, search_api, stores_api
from astrai.server.rag.files import PURPOSES
from astrai.server.rag.service import RagCollector, RagService
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

UPLOAD = multipart_body({"file": {"type": "string", "format": "binary"},
                         "purpose": {"type": "string", "enum": list(PURPOSES)}}, ["file", "purpose"])
CREATE_STORE = json_body(stores_api.CreateStoreRequest)
UPDATE_STORE = json_body(stores_api.UpdateStoreRequest)
ATTACH = json_body(stores_api.AttachRequest)
SEARCH = json_body(search_api.SearchRequest)
BATCH = json_body(stores_api.BatchRequest)

# (path, handler, methods, the request body's OpenAPI (None: no body), the 200 answer's shape)
ROUTES = [
    ("/v1/files", files_api.upload_file, ["POST"], UPLOAD, OpenAIObject),
    ("/v1/files", files_api.list_files, ["GET"], None, ObjectPage),
    ("/v1/files/{file_id}", files_api.get_file, ["GET"], None, OpenAIObject),
    ("/v1/files/{file_id}", files_api.delete_file, ["DELETE"], None, Deleted),
    ("/v1/files/{file_id}/content", files_api.file_content, ["GET"], None, None),
    ("/v1/vector_stores", stores_api.create_store, ["POST"], CREATE_STORE, OpenAIObject),
    ("/v1/vector_stores", stores_api.list_stores, ["GET"], None, ObjectPage),
    ("/v1/vector_stores/{vector_store_id}", stores_api.get_store, ["GET"], None, OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}", stores_api.update_store, ["POST"], UPDATE_STORE, OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}", stores_api.delete_store, ["DELETE"], None, Deleted),
    ("/v1/vector_stores/{vector_store_id}/files", stores_api.attach_file, ["POST"], ATTACH, OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}/files", stores_api.list_store_files, ["GET"], None, ObjectPage),
    ("/v1/vector_stores/{vector_store_id}/files/{file_id}", stores_api.get_store_file, ["GET"], None, OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}/files/{file_id}", stores_api.detach_file, ["DELETE"], None, Deleted),
    ("/v1/vector_stores/{vector_store_id}/search", search_api.search_store, ["POST"], SEARCH, SearchResults),
    ("/v1/vector_stores/{vector_store_id}/file_batches", stores_api.create_batch, ["POST"], BATCH, OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}", stores_api.get_batch, ["GET"], None,
     OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", stores_api.get_batch, ["POST"], None,
     OpenAIObject),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", stores_api.list_batch_files, ["GET"], None,
     ObjectPage),
]


def install(app: FastAPI, data_dir: str, embedder: Embedder, max_file_bytes: int,
            registry: CollectorRegistry) -> RagService:
    """Add the routes and metrics; the service opens its stores in `start()` (a thread, once the embedder is loaded)."""
    service = RagService(Path(data_dir).expanduser(), embedder, max_file_bytes)
    app.state.rag = service
    registry.register(RagCollector(service))
    for path, endpoint, methods, body, answer in ROUTES:
        app.add_api_route(path, endpoint, methods=methods, openapi_extra=body,
                          responses=json_answer(answer) if answer is not None else None)
    return service


__all__ = ["ROUTES", "RagService", "install"]
