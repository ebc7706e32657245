"""Serving one request: the resolved model first, then its ``fallbacks`` when it fails before
anything reached the client with an error whose class allows it (``backends.errors.may_retry``:
unavailable, overloaded, timed out, broken upstream).

Every surface calls ``open_first`` with its own ``open`` step (start the backend's work and
wait for its first item): for a stream that is the first chunk, awaited before the response
headers go out, so an early failure still gets its real status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from backends.errors import GatewayError, may_retry
from backends.protocol import Backend

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Served(Generic[T]):
    """What ``open`` returned, and who serves it."""

    result: T
    backend: Backend
    replica: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"x-llmgate-model": self.backend.model}
        if self.replica:
            headers["x-llmgate-replica"] = self.replica
        return headers


async def open_first(
    chain: list[Backend],
    open: Callable[[Backend], Awaitable[T]],
    replica: Callable[[T], str | None] = lambda _: None,
) -> Served[T]:
    """``open(backend)`` for the first backend of ``chain`` that does not fail retryably."""
    last: GatewayError | None = None
    for backend in chain:
        try:
            result = await open(backend)
        except GatewayError as exc:
            if not may_retry(exc):
                raise
            last = exc
            if backend is not chain[-1]:
                log.warning(
                    "model %s failed before the first byte (%s): trying its fallback",
                    backend.model,
                    exc.message,
                )
            continue
        return Served(result, backend, replica(result))
    assert last is not None, "an empty chain: the router always returns the model itself"
    raise last
