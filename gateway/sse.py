"""Chat chunks -> Server-Sent Events, in DESIGN.md §5's order.

The first chunk is awaited *before* the response starts, so an early failure (queue full,
context too long, engine down) still gets its real status and envelope. After that, an error
becomes a ``data: {"error": ...}`` frame followed by ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from backends.base import EncodedChunk, StreamItem
from backends.errors import GatewayError, InternalError

log = logging.getLogger(__name__)

DONE_FRAME = b"data: [DONE]\n\n"


def frame(chunk: StreamItem) -> bytes:
    if isinstance(chunk, EncodedChunk):
        return b"data: " + chunk.data + b"\n\n"
    return b"data: " + chunk.model_dump_json().encode() + b"\n\n"


def error_frame(error: GatewayError) -> bytes:
    return b"data: " + json.dumps(error.to_body()).encode() + b"\n\n"


async def sse_response(
    first: StreamItem | None,
    chunks: AsyncIterator[StreamItem],
    headers: dict[str, str] | None = None,
) -> Response:
    """Stream ``first`` (already awaited by the caller, so early errors kept their status) and
    then the rest of ``chunks``."""

    async def frames() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield frame(first)
                async for chunk in chunks:
                    yield frame(chunk)
        except GatewayError as exc:
            yield error_frame(exc)
        except Exception:
            log.exception("stream failed after headers were sent")
            yield error_frame(InternalError("internal server error"))
        finally:
            await _close(chunks)
        yield DONE_FRAME

    # ping=0: no keep-alive comments; sse-starlette's would add a blank line after them.
    return EventSourceResponse(frames(), headers=headers, ping=0, sep="\n")


async def _close(chunks: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
