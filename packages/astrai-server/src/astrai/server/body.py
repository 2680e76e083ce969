"""Reading a request body safely: size limit, strict UTF-8, strict JSON, then the pydantic model.

The body is decoded by hand (not by FastAPI) so each failure gets its own 400 message:
invalid UTF-8, invalid JSON, NaN/Infinity, numbers too large to be floats, nesting too deep,
lone surrogates that no tokenizer could encode.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from astrai.server.errors import APIError, bad_request, validation_message
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than the limit of {limit} bytes", code="request_too_large",
                         headers={"Connection": "close"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def parse_json(raw: bytes) -> Any:
    """Decode bytes as strict UTF-8 JSON or raise a 400 that says what is wrong."""
    if not raw.strip():
        raise bad_request("Request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"Request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise bad_request("Request body JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, and so are our hooks' errors
        raise bad_request(f"Request body is not valid JSON: {exc}") from None
    _check_strings(data, "")
    return data


def _check_strings(value: Any, path: str, depth: int = 0) -> None:
    """Reject lone surrogates (valid JSON escapes, invalid text) before they reach a tokenizer."""
    if depth > 64:
        raise bad_request("Request body JSON is nested too deeply")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request(f"{path or 'body'}: string contains an invalid Unicode code point",
                              param=path or None) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path, depth + 1)
            _check_strings(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{path}.{i}", depth + 1)


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(include_url=False))
        raise bad_request(message, param) from None


async def read_model(request: Request, model: type[M]) -> M:
    """Read, decode and validate the body of `request` as `model`."""
    raw = await request.body()
    return validate(model, parse_json(raw))
