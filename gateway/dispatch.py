"""Serving one request: the resolved model first, then its ``fallbacks`` when it fails before
anything reached the client with an error whose class allows it (``backends.errors.may_retry``:
unavailable, overloaded, timed out, broken upstream).

Every surface calls ``open_first`` with its own ``open`` step (start the backend's work and
wait for its first item, ``prime``): for a stream that is the first payload, awaited before the
response headers go out, so an early failure still gets its real status. ``open`` gets the
backend behind a ``MeteredBackend`` (``gateway.metered_backend``), which notes the request's
outputs and usage in its ``RequestRecord``, over a ``LimitedBackend`` (``gateway.limits``:
messages, ``max_tokens`` cap, deadline); ``open_first`` notes who served it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeGuard, TypeVar

from backends.errors import GatewayError, may_retry
from backends.protocol import Backend, OpenAIRelay
from gateway.limits import LimitedBackend, guard
from gateway.metered_backend import BackendActivity, MeteredBackend
from gateway.rate_limits import ModelLimitedBackend
from gateway.request_models import leased
from gateway.request_record import current_record

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound="HasReplica")


class HasReplica(Protocol):
    @property
    def replica(self) -> str | None: ...


_RELAYS: dict[type, bool] = {}  # backend class -> implements OpenAIRelay
_PROXIES = (MeteredBackend, LimitedBackend, ModelLimitedBackend)


def relays(backend: Backend) -> TypeGuard[OpenAIRelay]:
    """``isinstance(backend, OpenAIRelay)`` for a backend behind this module's proxies,
    answered once per backend class (a backend's relay methods are its class's): the runtime
    protocol check, through the proxies, cost more than the rest of a relay's own work."""
    real: object = backend
    while isinstance(real, _PROXIES):
        real = real.unwrapped
    kind = type(real)
    known = _RELAYS.get(kind)
    if known is None:
        known = _RELAYS[kind] = isinstance(real, OpenAIRelay)
    return known


@dataclass
class Primed(Generic[T]):
    """A stream whose first item has arrived (None: it ended at once), and its replica."""

    first: T | None
    rest: AsyncIterator[T]
    replica: str | None


async def prime(items: AsyncIterator[T], replica: str | None) -> Primed[T]:
    """Wait for the first item of ``items``; on failure close them and raise."""
    try:
        first: T | None = await anext(items)
    except StopAsyncIteration:
        first = None
    except BaseException:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    return Primed(first, items, replica)


@dataclass
class Served(Generic[R]):
    """What ``open`` returned, and who serves it."""

    result: R
    backend: Backend

    def headers(self) -> dict[str, str]:
        headers = {"x-llmgate-model": self.backend.model}
        if self.result.replica:
            headers["x-llmgate-replica"] = self.result.replica
        return headers


async def open_first(
    chain: list[Backend],
    open: Callable[[Backend], Awaitable[R]],
    activity: BackendActivity | None = None,
) -> Served[R]:
    """``open(backend)`` for the first backend of ``chain`` that does not fail retryably."""
    last: GatewayError | None = None
    record = current_record()
    if activity is None and record is not None:
        activity = record.activity
    for backend in chain:
        # held to the request's limits (gateway.limits), then metered
        metered: Backend = MeteredBackend(guard(backend), record, activity)
        try:
            async with leased(backend):  # loaded (within the budget) and kept while opening
                result = await open(metered)
        except GatewayError as exc:
            if record is not None:
                record.error_type = exc.code
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
        if record is not None:
            record.model, record.backend = backend.model, backend.kind
            record.replica = result.replica
            record.error_type = None
        return Served(result, backend)
    assert last is not None, "an empty chain: the router always returns the model itself"
    raise last
