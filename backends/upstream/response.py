"""An upstream's answer as ``UpstreamClient`` hands it on once its headers have arrived: read it
whole (``aread``) or line by line (``lines``, for SSE and NDJSON), then ``aclose`` it.

The generation requests go to aiohttp directly, over the same connection pool as the pooled
httpx client (which keeps serving health checks and metadata): httpx's request and response
objects around aiohttp's, and its chain of async generators per read, cost more CPU than the
relay's own work (bench/passthrough.py; docs/benchmarks.md). aiohttp's errors are turned into
the httpx errors httpx-aiohttp's transport raises for them (``httpx_error``), so
``backends.upstream.transport`` classifies every failure as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from httpx_aiohttp.transport import map_aiohttp_exceptions


def httpx_error(exc: Exception) -> Exception:
    """The httpx error httpx-aiohttp's transport raises for the aiohttp error ``exc`` (raised
    ``from`` it); ``exc`` itself when it maps to none."""
    try:
        with map_aiohttp_exceptions():
            raise exc
    except Exception as mapped:
        return mapped


class UpstreamResponse:
    """One upstream answer whose headers have arrived. Its read methods raise httpx's transport
    errors (``httpx_error``); ``aclose`` is idempotent: the connection goes back to the pool
    when the body was read to its end, and is dropped otherwise."""

    __slots__ = ("_response", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status

    @property
    def retry_after(self) -> str | None:
        """The answer's ``Retry-After`` header, as sent."""
        return self._response.headers.get("Retry-After")

    async def aread(self) -> bytes:
        """The whole body (decompressed)."""
        try:
            return await self._response.read()
        except Exception as exc:
            raise httpx_error(exc)  # noqa: B904 (chained from exc already)

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines without their ends, as they arrive: CRLF, LF or CR ends a line
        (as in SSE); nothing else does (a JSON string may hold U+2028 raw). The last line is
        given even without an end."""
        content = self._response.content
        pending = b""
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                if pending:
                    chunk = pending + chunk
                if b"\r" in chunk:
                    # a CR at the very end may be the first half of a CRLF: decide next time
                    keep_cr = chunk.endswith(b"\r")
                    if keep_cr:
                        chunk = chunk[:-1]
                    chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                    if keep_cr:
                        chunk += b"\r"
                *complete, pending = chunk.split(b"\n")
                for line in complete:
                    yield line
        except Exception as exc:
            raise httpx_error(exc)  # noqa: B904 (chained from exc already)
        if pending:
            yield pending.removesuffix(b"\r")

    async def aclose(self) -> None:
        response = self._response
        response.release()
        await response.wait_for_close()
