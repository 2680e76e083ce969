"""`POST /v1/embeddings` in OpenAI's shape.

`input` is a string, a list of strings, a list of token ids or a list of token-id lists (ids are
the whole model input, [CLS]/[SEP] included). `encoding_format` "float" (default) or "base64"
(little-endian float32 bytes, as OpenAI sends them). `dimensions` other than the model's own is a
400: no served encoder is trained for truncation. Usage counts the tokens encoded.

The encoder comes with the `astrai-server[rag]` extra (astrai-retrieval): `retrieval_gate` routes
here only when it is installed (else a 501 naming it); this module only names `Embedder` in types.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Literal

from astrai.server.body import read_model
from astrai.server.errors import APIError, bad_request
from astrai.server.openai_models import StrictModel, text_or_items
from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from astrai.server.embedder import Embedder

MAX_INPUTS = 2048  # per request, as OpenAI


class EmbeddingRequest(StrictModel):
    model: str
    input: Any
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        value = text_or_items(value, "must be a string, a list of strings, a list of token ids or a list of "
                                     "token-id lists, and not empty")
        if isinstance(value, str):
            return value
        if len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request, got {len(value)}")
        if all(_is_int(v) for v in value):
            return value
        for i, item in enumerate(value):
            if isinstance(item, str):
                if not item:
                    raise ValueError(f"item {i} must not be empty")
            elif not (isinstance(item, list) and item and all(_is_int(t) for t in item)):
                raise ValueError(f"item {i} must be a non-empty string or a non-empty list of token ids")
        return value

    def inputs(self) -> list[str | list[int]]:
        value = self.input
        if isinstance(value, str) or all(_is_int(v) for v in value):
            return [value]
        return list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def served_embedder(request: Request, model: str | None) -> Embedder:
    """The embedder `model` names, or 404 naming what this server serves."""
    embedder: Embedder | None = request.app.state.embedder
    if embedder is not None and model == embedder.name:
        return embedder
    served = f"`{embedder.name}`" if embedder is not None else "none (start the server with --embedding-model)"
    raise APIError(404, f"The model `{model}` is not an embedding model served here. Embedding models: {served}.",
                   param="model", code="model_not_found")


async def create_embeddings(request: Request) -> Response:
    req = await read_model(request, EmbeddingRequest)
    embedder = served_embedder(request, req.model)
    dimension = embedder.encoder().dimension
    if req.dimensions is not None and req.dimensions != dimension:
        raise bad_request(f"dimensions: model `{embedder.name}` was not trained for shortened embeddings; it only "
                          f"produces {dimension} dimensions", "dimensions")
    ids = embedder.token_ids(req.inputs())
    vectors = await embedder.embed(ids)
    as_base64 = req.encoding_format == "base64"
    data = []
    for i, row in enumerate(vectors):
        embedding: Any = base64.b64encode(row.astype("<f4").tobytes()).decode() if as_base64 else row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(len(x) for x in ids)
    return JSONResponse({"object": "list", "data": data, "model": embedder.name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


__all__ = ["EmbeddingRequest", "create_embeddings", "served_embedder"]
