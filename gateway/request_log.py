"""One log line per request, on logger ``llmgate.requests``, from its finished ``RequestRecord``.

``install_request_log(app, config)`` registers the observer. A line carries the request id (the
``X-Request-ID`` echoed to the client), method, path, surface, the model asked for and the one
that served it, backend, replica, API key id (never the key), status, error code, tokens, time to
first output and duration. As text (logfmt after the summary) by default; with
``server.log_format: json`` every log line of the process is a JSON object
(``configure_logging``) and a request line's fields are top-level keys.

Prompts are never logged unless ``server.log_prompts: true``: then a small middleware keeps the
body of each POST to a model route (the first ``PROMPT_LOG_LIMIT`` bytes, as sent) in the
record's ``prompt``, and the line carries it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import GatewayConfig
from gateway.request_record import RequestRecord

REQUEST_LOGGER = "llmgate.requests"
PROMPT_LOG_LIMIT = 16 * 1024  # bytes of a request body kept for log_prompts
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
_NO_PROMPT_SURFACES = frozenset({"other", "models", "admin"})
_IN_SUMMARY = frozenset({"method", "path", "status"})  # the text line starts with these


def request_fields(record: RequestRecord, with_prompt: bool = False) -> dict[str, Any]:
    """The line's fields, in order; times in milliseconds (None: did not happen)."""
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "surface": record.surface,
        "requested": record.requested,
        "model": record.model,
        "backend": record.backend,
        "replica": record.replica,
        "key_id": record.key_id,
        "status": record.status,
        "error": record.error_type,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "ttft_ms": _ms(record.ttft),
        "duration_ms": _ms(record.duration),
    }
    if with_prompt:
        fields["prompt"] = record.prompt
    return fields


class RequestLog:
    """The observer: one INFO line per finished request (see the module docstring)."""

    def __init__(self, log_prompts: bool = False) -> None:
        self._log = logging.getLogger(REQUEST_LOGGER)
        self._log_prompts = log_prompts

    def observe(self, record: RequestRecord) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        fields = request_fields(record, self._log_prompts)
        summary = f"{record.method} {record.path} {record.status}"
        text = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if k not in _IN_SUMMARY)
        self._log.info(
            "%s %s", summary, text, extra={"llmgate_fields": fields, "llmgate_summary": summary}
        )


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and a request line's fields at top level; ``exc_info`` as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "llmgate_fields", None)
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": getattr(record, "llmgate_summary", None) or record.getMessage(),
        }
        if fields is not None:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The process's root handler: ``TEXT_FORMAT`` lines, or ``JsonFormatter`` for ``json``
    (run ``uvicorn`` with ``log_config=None`` then, so that its lines reach the root too)."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own logging config (if one ran) gives these handlers and stops them
        # propagating: hand their lines to the root handler instead
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)


class PromptCaptureMiddleware:
    """Keeps the first ``PROMPT_LOG_LIMIT`` bytes of a model request's body in its record's
    ``prompt`` (installed only with ``server.log_prompts: true``). Reads nothing itself: it
    notes the body chunks the handler receives. Works at any place in the middleware stack
    (the record is looked up when the body arrives)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        kept = bytearray()

        async def noting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(kept) < PROMPT_LOG_LIMIT:
                kept.extend(message.get("body", b"")[: PROMPT_LOG_LIMIT - len(kept)])
                record: RequestRecord | None = scope.get("state", {}).get("record")
                if record is not None and record.surface not in _NO_PROMPT_SURFACES:
                    record.prompt = kept.decode("utf-8", errors="replace")
            return message

        await self.app(scope, noting_receive, send)


def install_request_log(app: FastAPI, config: GatewayConfig) -> None:
    """Register the request log observer (and, with ``log_prompts``, the body capture)."""
    server = config.server
    app.state.record_observers.append(RequestLog(server.log_prompts).observe)
    if server.log_prompts:
        app.add_middleware(PromptCaptureMiddleware)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
