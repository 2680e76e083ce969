"""`/v1/files`: upload (multipart, purpose `assistants`), list, retrieve, content, delete."""

from __future__ import annotations

from astrai.server.errors import APIError, bad_request
from astrai.server.rag.common import page, rag
from astrai.server.rag.files import PURPOSES
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


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
