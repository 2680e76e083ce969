"""Files, vector stores and RAG for the server: the `astrai-server[rag]` extra.

Imported only when the extra is installed and the server has a data folder and an embedding
model (`install`); serving without it never imports `astrai.retrieval`.
"""

from __future__ import annotations

from pathlib import Path

from astrai.server.embedder import Embedder
from astrai.server.rag import files_api, search_api, stores_api
from astrai.server.rag.service import RagCollector, RagService
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

ROUTES = [
    ("/v1/files", files_api.upload_file, ["POST"]),
    ("/v1/files", files_api.list_files, ["GET"]),
    ("/v1/files/{file_id}", files_api.get_file, ["GET"]),
    ("/v1/files/{file_id}", files_api.delete_file, ["DELETE"]),
    ("/v1/files/{file_id}/content", files_api.file_content, ["GET"]),
    ("/v1/vector_stores", stores_api.create_store, ["POST"]),
    ("/v1/vector_stores", stores_api.list_stores, ["GET"]),
    ("/v1/vector_stores/{vector_store_id}", stores_api.get_store, ["GET"]),
    ("/v1/vector_stores/{vector_store_id}", stores_api.update_store, ["POST"]),
    ("/v1/vector_stores/{vector_store_id}", stores_api.delete_store, ["DELETE"]),
    ("/v1/vector_stores/{vector_store_id}/files", stores_api.attach_file, ["POST"]),
    ("/v1/vector_stores/{vector_store_id}/files", stores_api.list_store_files, ["GET"]),
    ("/v1/vector_stores/{vector_store_id}/files/{file_id}", stores_api.get_store_file, ["GET"]),
    ("/v1/vector_stores/{vector_store_id}/files/{file_id}", stores_api.detach_file, ["DELETE"]),
    ("/v1/vector_stores/{vector_store_id}/search", search_api.search_store, ["POST"]),
    ("/v1/vector_stores/{vector_store_id}/file_batches", stores_api.create_batch, ["POST"]),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}", stores_api.get_batch, ["GET"]),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", stores_api.get_batch, ["POST"]),
    ("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", stores_api.list_batch_files, ["GET"]),
]


def install(app: FastAPI, data_dir: str, embedder: Embedder, max_file_bytes: int,
            registry: CollectorRegistry) -> RagService:
    """Add the routes and metrics; the service opens its stores in `start()` (a thread, once the embedder is loaded)."""
    service = RagService(Path(data_dir).expanduser(), embedder, max_file_bytes)
    app.state.rag = service
    registry.register(RagCollector(service))
    for path, endpoint, methods in ROUTES:
        app.add_api_route(path, endpoint, methods=methods)
    return service


__all__ = ["ROUTES", "RagService", "install"]
