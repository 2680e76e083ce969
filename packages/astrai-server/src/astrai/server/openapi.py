"""The OpenAPI document (`GET /openapi.json`, the docs page at `/docs`), as vLLM serves it.

Handlers read their bodies themselves (`body.read_model`: strict UTF-8 and JSON, OpenAI's error
shape), so FastAPI cannot see their request models; each route names its model with
`json_body(Model)` (or `multipart_body(...)`), and `install_openapi` folds those schemas' shared
definitions into `components/schemas` and declares every `{path}` parameter, so the document is
complete enough for API gateways, client generators and schema fuzzers.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is validated as `model`."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def multipart_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """`openapi_extra` for a multipart/form-data upload with these fields (JSON Schema each)."""
    schema = {"type": "object", "properties": fields, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def json_answer(model: type[BaseModel], description: str = "Successful Response") -> dict[int | str, Any]:
    """`responses` for a route whose 200 body has `model`'s shape (documentation only: never validated)."""
    return {200: {"model": model, "description": description}}


def install_openapi(app: FastAPI) -> None:
    """Serve the document built from the app's routes, with the request bodies `json_body` declared."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            _complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]  # FastAPI's documented way to customise the document


def _complete(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in document.get("paths", {}).items():
        names = re.findall(r"{([^}:]+)}", path)
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", ()) if p.get("in") == "path"}
            extra = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                     for n in names if n not in declared]
            if extra:
                operation["parameters"] = [*operation.get("parameters", ()), *extra]
            for media in operation.get("requestBody", {}).get("content", {}).values():
                schema = media.get("schema", {})
                for name, definition in schema.pop("$defs", {}).items():
                    components.setdefault(name, definition)
