"""Transport failures (httpx, aiohttp underneath, OS errors) -> the error tree, by root cause.
The one place they are mapped, before the first event and mid-stream alike."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import httpx

from backends.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    GatewayError,
    UpstreamError,
)

E = TypeVar("E")

TRANSPORT_ERRORS = (TimeoutError, httpx.HTTPError, OSError)


async def map_transport_errors(model: str, work: Awaitable[E], mid_stream: bool = False) -> E:
    """Await ``work``, turning transport failures into the error tree (raised ``from`` them)."""
    try:
        return await work
    except GatewayError:
        raise
    except TRANSPORT_ERRORS as exc:
        raise transport_error(model, exc, mid_stream) from exc


def transport_error(model: str, exc: BaseException, mid_stream: bool = False) -> GatewayError:
    """Classify a transport failure by its root cause. (httpx-aiohttp reports a refused
    connection as ``ConnectTimeout``, so the exception's type alone is not enough.) Once a
    stream has begun, a timeout is the idle deadline and anything else a broken stream."""
    causes = _cause_chain(exc)
    if any(isinstance(c, aiohttp.ClientError) for c in causes):
        # aiohttp's own error says what happened; httpx-aiohttp's mapping is coarse (it maps a
        # connection the upstream closed without answering to ``ConnectTimeout``)
        timed_out = any(isinstance(c, TimeoutError) for c in causes)
    else:
        timed_out = any(isinstance(c, TimeoutError | httpx.TimeoutException) for c in causes)
    if mid_stream:
        if timed_out:
            return BackendTimeoutError(
                f"model '{model}': the upstream stalled mid-stream (idle deadline)"
            )
        return UpstreamError(f"model '{model}': the upstream connection broke mid-stream")
    if any(isinstance(c, ConnectionRefusedError | httpx.ConnectError) for c in causes) or any(
        type(c).__name__ in {"ClientConnectorError", "ClientConnectorDNSError"} for c in causes
    ):
        return BackendUnavailableError(
            f"model '{model}': cannot connect to the upstream ({exc})", retry_after=5
        )
    if timed_out:
        return BackendTimeoutError(f"model '{model}': the upstream did not answer in time")
    if any(isinstance(c, aiohttp.ServerDisconnectedError) for c in causes):
        return UpstreamError(
            f"model '{model}': the upstream closed the connection without answering"
        )
    if isinstance(exc, ConnectionError | httpx.UnsupportedProtocol):
        return BackendUnavailableError(
            f"model '{model}': cannot connect to the upstream ({exc})", retry_after=5
        )
    return UpstreamError(f"model '{model}': the upstream connection failed ({type(exc).__name__})")


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    # aiohttp's ClientConnectorError wraps the OSError in .os_error
    for cause in list(chain):
        os_error = getattr(cause, "os_error", None)
        if isinstance(os_error, OSError):
            chain.append(os_error)
    return chain
