"""``HEAD`` answered on every ``GET`` route, as HTTP says it should be (RFC 9110 §9.3.2).

FastAPI routes answer only the methods they declare, so a ``HEAD`` probe (Ollama's clients
and health checks send ``HEAD /``, ``/api/version``, ``/api/tags``) got a 405. ``HeadAsGet``
runs the app as asked; when that is a 405 (no ``HEAD`` route there), nothing of it is sent
and the app runs again as ``GET``: its status and headers go out, and the server drops the
body of a response to ``HEAD``. A route with a ``HEAD`` of its own (``/api/blobs/...``) keeps
it, and a path with no ``GET`` either still answers 405 with its ``Allow``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """See the module docstring (used by ``RequestMiddleware`` around the app)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        refused = False

        async def unless_refused(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 405:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, receive, unless_refused)
        if refused:
            await self.app({**scope, "method": "GET"}, receive, send)
