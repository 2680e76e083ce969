"""OpenAI-shaped errors: one exception type, one JSON body, honest status codes.

Every failure a client can cause ends up here as an `APIError`, so the body is always
`{"error": {"message", "type", "param", "code"}}` and never a bare 422 or a 500.
"""

from __future__ import annotations

import logging

from astrai.scheduler import FieldError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

logger = logging.getLogger("astrai.server")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error to report to the client with OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    """The JSON OpenAI sends for an error (also used inside an SSE stream)."""
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """Turn the first pydantic error into a message that names the field.

    The field is pydantic's location, or, for a check that raised `FieldError`, the field it
    names (relative to the location when a nested model raised it): never read from the text.
    """
    if not errors:
        return "invalid request", None
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, FieldError):
        field = raised.field
        if param is not None and not field.startswith(param + "."):
            field = f"{param}.{field}"
        return f"{field}: {raised.detail}", field
    if param is None:
        return msg, None
    return f"{param}: {msg}", param


def install_error_handlers(app: FastAPI) -> None:
    """Map every framework error to the OpenAI shape (422 becomes 400, unknown routes 404...)."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Unknown route: {request.method} {request.url.path}"
            code = "not_found"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
            code = "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        headers = dict(exc.headers or {})
        return JSONResponse(error_body(exc.status_code, message, code=code), status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        request.scope.setdefault("state", {}).setdefault("log", {})["disconnected"] = True
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error: %s", exc)
        return JSONResponse(error_body(500, f"internal server error: {type(exc).__name__}", code="internal_error"),
                            status_code=500)
