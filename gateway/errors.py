"""The one place where errors become HTTP responses, in the envelope of the surface that was
asked: OpenAI's ``{"error": {"message", "type", "param", "code"}}`` by default, Ollama's
``{"error": "..."}`` under ``/api/``, Anthropic's ``{"type": "error", "error": {"type",
"message"}}`` under ``/v1/messages``. ``error_response(exc, path)`` picks the shape; a surface's
stream writes a mid-stream error with the same body functions (``ollama_error_body``,
``anthropic_error_body``)."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.check_errors import CrossFieldError
from backends.errors import (
    GatewayError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from gateway.request_record import current_record

log = logging.getLogger(__name__)

# pydantic puts union-member and validator names into ``loc``; they are not fields.
_NOT_A_FIELD = re.compile(r"[\[\]()\-, ]|^(str|int|float|bool|list|dict|none|function-\w+)$")


# Anthropic's error types by status (docs.anthropic.com, "Errors"); 503 from an engine that is
# not ready reads as "overloaded", which Anthropic's SDK retries.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def ollama_error_body(exc: GatewayError) -> dict[str, Any]:
    """Ollama's error body: the message alone (its clients raise ``ResponseError(message)``)."""
    return {"error": exc.message}


def anthropic_error_body(exc: GatewayError) -> dict[str, Any]:
    """Anthropic's error body (its SDK maps the status to an exception class)."""
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def surface_of(path: str) -> str:
    """Which error shape a path's clients expect: "ollama", "anthropic" or "openai"."""
    if path.startswith("/api/"):
        return "ollama"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    return "openai"


def error_response(exc: GatewayError, path: str = "") -> JSONResponse:
    """``exc`` in the shape of ``path``'s surface; the request's record notes its code."""
    record = current_record()
    if record is not None and record.error_type is None:
        record.error_type = exc.code or exc.error_type
    surface = surface_of(path)
    if surface == "ollama":
        body = ollama_error_body(exc)
    elif surface == "anthropic":
        body = anthropic_error_body(exc)
    else:
        body = exc.to_body()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers())


def param_from_loc(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``."""
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(item, int):
            if not parts:
                break
            parts[-1] += f"[{item}]"
        elif isinstance(item, str) and item[:1].isupper():
            continue  # a union member's class name (``Turn``): the fields follow it
        elif isinstance(item, str) and not _NOT_A_FIELD.search(item):
            parts.append(item)
        else:
            break
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("invalid request body")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return InvalidRequestError(f"request body is not valid JSON: {detail}".rstrip(": "))
    loc = tuple(first.get("loc", ()))
    param = param_from_loc(loc)
    if loc in {("body",), ()}:
        if first.get("type") == "missing":
            return InvalidRequestError("request body is missing: send a JSON object")
        if first.get("type") == "value_error":  # a check across fields, on a JSON object
            error = first.get("ctx", {}).get("error")
            param = error.param if isinstance(error, CrossFieldError) else None
            message = str(first.get("msg")).removeprefix("Value error, ")
            return InvalidRequestError(message, param=param)
        return InvalidRequestError(f"request body must be a JSON object: {first.get('msg')}")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "required field is missing"
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def install_exception_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error: GatewayError
        if exc.status_code == 404:
            error = NotFoundError(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowedError(
                f"method {request.method} is not allowed on {request.url.path}"
            )
        elif exc.status_code < 500:
            error = InvalidRequestError(str(exc.detail))
        else:
            error = InternalError("internal server error")
        response = error_response(error, request.url.path)
        if exc.status_code == 405 and exc.headers and "allow" in {k.lower() for k in exc.headers}:
            response.headers.update(exc.headers)  # the methods the route takes (RFC 9110)
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(InternalError("internal server error"), request.url.path)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
