"""Transport failures (httpx, aiohttp underneath, OS errors) -> the error tree, by root cause."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import httpx

from backends.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    GatewayError,
    UpstreamError,
)

E = TypeVar("E")


async def map_transport_errors(model: str, work: Awaitable[E]) -> E:
    """Await ``work``, turning transport failures into the error tree (raised ``from`` them)."""
    try:
        return await work
    except GatewayError:
        raise
    except (TimeoutError, httpx.HTTPError, OSError) as exc:
        raise transport_error(model, exc) from exc


def transport_error(model: str, exc: BaseException) -> GatewayError:
    """Classify a transport failure by its root cause. (httpx-aiohttp reports a refused
    connection as ``ConnectTimeout``, so the exception's type alone is not enough.)"""
    causes = _cause_chain(exc)
    if any(isinstance(c, ConnectionRefusedError | httpx.ConnectError) for c in causes) or any(
        type(c).__name__ in {"ClientConnectorError", "ClientConnectorDNSError"} for c in causes
    ):
        return BackendUnavailableError(
            f"model '{model}': cannot connect to the upstream ({exc})", retry_after=5
        )
    if any(isinstance(c, TimeoutError | httpx.TimeoutException) for c in causes):
        return BackendTimeoutError(f"model '{model}': the upstream did not answer in time")
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
