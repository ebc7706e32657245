"""Which browser pages may call the API from JavaScript (``server.cors_origins``).

Starlette's CORS layer, added outside every other so that a preflight ``OPTIONS`` is answered
before the key is checked, and every answer (errors too) carries the headers a page needs to
read it. Unset, pages served from this machine may call it (any port: a web UI's dev server, a
desktop app's webview), as Ollama allows by default; a page on any other site may not.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import GatewayConfig

LOCAL_PAGES = (
    r"(https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
    r"|(app|tauri|vscode-webview)://[^/]+)"
)
# What a page may read of an answer besides the CORS-safelisted headers
EXPOSED_HEADERS = [
    "x-request-id",
    "retry-after",
    "x-llmgate-model",
    "x-llmgate-replica",
    *(f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset")
      for unit in ("requests", "tokens")),
]  # fmt: skip


class OriginCors:
    """Starlette's CORS layer for requests that carry an ``Origin`` (what browsers send on a
    cross-origin call, and on any POST); the others, SDKs and scripts, go straight through.
    Starlette wraps ``send`` for every request, which cost a relayed 64-chunk stream ~5 % more
    gateway CPU (bench/passthrough.py); without an ``Origin`` it would only add ``Vary:
    Origin``, and these answers carry nothing that lets a cache reuse them."""

    def __init__(self, app: ASGIApp, /, **cors: Any) -> None:
        self._app = app
        self._cors = CORSMiddleware(app, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == b"origin" for name, _ in scope["headers"]):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def install_cors(app: FastAPI, config: GatewayConfig) -> None:
    """Add the CORS layer (call after every other middleware: the last added is outermost)."""
    origins = config.server.cors_origins
    if origins == []:
        return
    app.add_middleware(
        OriginCors,
        allow_origins=origins or (),
        allow_origin_regex=LOCAL_PAGES if origins is None else None,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        # Chrome asks before a public page may reach a private address: allowed only for
        # origins the config names
        allow_private_network=origins is not None,
        max_age=600,
    )
