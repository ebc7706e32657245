"""Serving one chat request: the resolved model first, then its ``fallbacks`` when it is
unavailable or overloaded before anything has reached the client (DESIGN.md §11).

For a stream, "before anything reached the client" means before its first chunk: that is
awaited here, before the response headers go out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from backends.base import (
    Backend,
    EncodedCompletion,
    ServedBy,
    StreamItem,
    served_by,
)
from backends.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    GatewayError,
    RateLimitError,
    UpstreamError,
)
from backends.schemas import ChatCompletion, ChatCompletionRequest

log = logging.getLogger(__name__)

# "Unavailable or overloaded": worth trying the next model. Client mistakes (4xx) are not.
FALLBACK_ON = (BackendUnavailableError, RateLimitError, BackendTimeoutError, UpstreamError)


@dataclass
class Served:
    backend: Backend
    by: ServedBy

    def headers(self) -> dict[str, str]:
        headers = {"x-llmgate-model": self.backend.model}
        if self.by.replica:
            headers["x-llmgate-replica"] = self.by.replica
        return headers


async def complete(
    chain: list[Backend], request: ChatCompletionRequest
) -> tuple[ChatCompletion | EncodedCompletion, Served]:
    last: GatewayError | None = None
    for backend in chain:
        info = ServedBy(model=backend.model)
        token = served_by.set(info)
        try:
            return await backend.chat(request), Served(backend, info)
        except FALLBACK_ON as exc:
            last = _note(backend, exc, chain)
        finally:
            served_by.reset(token)
    assert last is not None
    raise last


async def open_stream(
    chain: list[Backend], request: ChatCompletionRequest
) -> tuple[StreamItem | None, AsyncIterator[StreamItem], Served]:
    last: GatewayError | None = None
    for backend in chain:
        info = ServedBy(model=backend.model)
        token = served_by.set(info)
        chunks = backend.stream(request)
        try:
            first: StreamItem | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except FALLBACK_ON as exc:
            await _close(chunks)
            last = _note(backend, exc, chain)
            continue
        except BaseException:
            await _close(chunks)
            raise
        finally:
            served_by.reset(token)
        return first, chunks, Served(backend, info)
    assert last is not None
    raise last


def _note(backend: Backend, exc: GatewayError, chain: list[Backend]) -> GatewayError:
    if backend is not chain[-1]:
        log.warning(
            "model %s failed before the first byte (%s): trying its fallback",
            backend.model,
            exc.message,
        )
    return exc


async def _close(chunks: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
