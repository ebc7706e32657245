"""Pure ASGI middleware (never Starlette's BaseHTTPMiddleware: it hides client disconnects).

- ``ApiKeyMiddleware``: 401 for a missing/wrong key on the model routes (``/v1/*``, Ollama's
  ``/api/*`` but ``/api/version``, the tutorials' ``POST /``), in the envelope of the surface
  asked; the chat page and ``/health`` stay open. Keys may be configured hashed
  (``gateway.api_keys``). Records the key's allowed models in
  ``scope["state"]["allowed_models"]`` for the handlers' 403 check, and its non-secret
  ``key_id`` there and in the request record.
- ``CancelOnDisconnectMiddleware``: when the client goes away before the response is complete
  (while queued, during prefill, while waiting for a non-streaming answer), cancel the handler
  so that the engine stops; streaming responses are closed the same way.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.errors import AuthenticationError
from gateway.api_keys import match_key
from gateway.config import ApiKey
from gateway.errors import error_response
from gateway.request_record import current_record


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[ApiKey]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not _needs_key(scope):
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope)
        match = match_key(self.keys, presented) if presented is not None else None
        if match is None:
            reason = "missing API key" if presented is None else "invalid API key"
            error = AuthenticationError(
                f"{reason}: send 'Authorization: Bearer <key>' with a configured key"
            )
            await error_response(error, scope["path"])(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["allowed_models"] = match.models
        state["admin"] = match.admin
        state["key_id"] = match.key_id
        record = current_record()
        if record is not None:
            record.key_id = match.key_id
        await self.app(scope, receive, send)


def _needs_key(scope: Scope) -> bool:
    path: str = scope["path"]
    if path.startswith("/api/"):
        return path != "/api/version"
    if path.startswith(("/v1/", "/admin/")):
        return True
    return path == "/" and scope.get("method") == "POST"


def _presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    api_key = headers.get(b"x-api-key") or headers.get(b"api-key")
    return api_key.decode("latin-1").strip() if api_key else None


class CancelOnDisconnectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        disconnected = False
        handler = asyncio.current_task()
        response_done = False

        async def pump() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    disconnected = True
                    if not response_done and handler is not None:
                        handler.cancel()
                    return

        async def wrapped_receive() -> Message:
            if disconnected and inbox.empty():
                return {"type": "http.disconnect"}
            return await inbox.get()

        async def wrapped_send(message: Message) -> None:
            nonlocal response_done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True
            await send(message)

        reader = asyncio.create_task(pump())
        try:
            await self.app(scope, wrapped_receive, wrapped_send)
        except asyncio.CancelledError:
            if not disconnected:
                raise
            # The client is gone: the handler was cancelled on purpose; nothing to answer.
            _uncancel()
        finally:
            reader.cancel()


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling():
            task.uncancel()
