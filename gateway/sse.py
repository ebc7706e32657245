"""JSON payloads -> Server-Sent Events (``data: <json>`` frames, then ``data: [DONE]``); and, for
a surface that writes its own events, errors and end (the Responses API: ``event: <type>``
frames, no ``[DONE]``), ``event_frame`` and ``framed_response``.

The first payload is awaited *before* the response starts (``gateway.dispatch``), so an early
failure (queue full, context too long, engine down) still gets its real status and envelope.
After that, an error becomes a ``data: {"error": ...}`` frame followed by ``data: [DONE]``.

``SSEResponse`` is a lean ASGI response rather than sse-starlette's ``EventSourceResponse``:
that one opens a task group and an anyio cancel scope per chunk, which measured ~10 µs of CPU
per relayed chunk (bench/passthrough.py). A client that goes away is handled by
``gateway.disconnect``, which cancels the handler and so closes the stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from backends.errors import GatewayError, InternalError

log = logging.getLogger(__name__)

DONE_FRAME = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def event_frame(event: str, payload: bytes) -> bytes:
    """A named event: ``event: <event>`` then ``data: <payload>``."""
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def error_frame(error: GatewayError) -> bytes:
    return b"data: " + json.dumps(error.to_body()).encode() + b"\n\n"


def sse_response(
    first: bytes | None,
    chunks: AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
) -> Response:
    """Stream ``first`` (already awaited by the caller, so early errors kept their status) and
    then the rest of ``chunks``; closes ``chunks`` however the response ends."""
    return DataFramesResponse(first, chunks, headers=headers)


def framed_response(
    first: bytes | None,
    frames: AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
) -> Response:
    """Stream ``first`` (already awaited by the caller) and then the rest of ``frames``, which
    are ready-made and end the stream themselves (errors included); closes ``frames`` however
    the response ends."""

    async def all_frames() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
                async for data in frames:
                    yield data
        finally:
            await _close(frames)

    return SSEResponse(all_frames(), headers=headers)


class SSEResponse(StreamingResponse):
    """``text/event-stream`` from an async iterator of ready-made frames; closes the iterator
    however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        headers = {**(headers or {}), "cache-control": "no-cache", "x-accel-buffering": "no"}
        super().__init__(frames, headers=headers)
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self.write(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await _close(self.frames)

    async def write(self, send: Send) -> None:
        """Send the body's frames (the response has started; the end follows)."""
        async for data in self.frames:
            await send({"type": "http.response.body", "body": data, "more_body": True})


class DataFramesResponse(SSEResponse):
    """``sse_response``'s stream: ``first`` then each of ``chunks`` as a ``data:`` frame, framed
    as it is sent (no generator of frames in between: this runs once per relayed chunk), then
    ``data: [DONE]``; a failure of ``chunks`` after the start is an error frame before it."""

    def __init__(
        self,
        first: bytes | None,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(chunks, headers=headers)
        self.first = first

    async def write(self, send: Send) -> None:
        chunks = self.frames
        failure: bytes | None = None
        if self.first is not None:
            await send({"type": "http.response.body", "body": frame(self.first), "more_body": True})
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except GatewayError as exc:
                    failure = error_frame(exc)
                    break
                except Exception:
                    log.exception("stream failed after headers were sent")
                    failure = error_frame(InternalError("internal server error"))
                    break
                body = b"data: " + chunk + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
        if failure is not None:
            await send({"type": "http.response.body", "body": failure, "more_body": True})
        await _close(chunks)
        await send({"type": "http.response.body", "body": DONE_FRAME, "more_body": True})


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
