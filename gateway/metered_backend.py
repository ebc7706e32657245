"""Metering what a backend produces for one request, in one place for every surface.

``gateway.dispatch.open_first`` hands each surface's ``open`` step a ``MeteredBackend``: a
proxy that forwards every attribute of the real backend (so ``isinstance`` checks against the
backend protocols answer as for the backend itself) and wraps only what produces output —
``generate``'s event stream, the relay's answer or chunks, ``embed``'s vectors — to note the
request's outputs and token usage in its ``RequestRecord`` and the backend's requests in flight
and last use in ``BackendActivity`` (which model lifecycle reads: a busy model is never
unloaded). A relayed answer's usage is read from its bytes with a cheap pattern, never a second
JSON parse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from backends import events as ev
from backends.embeddings import EmbeddingResult
from backends.errors import GatewayError, InternalError
from backends.protocol import Backend, OpenStream, Relayed, RelayEndpoint
from backends.upstream.openai_compat import without_usage
from gateway.request_record import RequestRecord
from gateway.shutdown import cut_off_error

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_CACHED_TOKENS = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')
_OUTPUT_EVENTS = (ev.TextDelta, ev.ReasoningDelta, ev.ToolCallDelta)


class BackendActivity:
    """Per model (public name): requests in flight and the last time one started or ended
    (``time.monotonic()``). Written and read on the event loop only."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    def begin(self, model: str) -> None:
        self._in_flight[model] = self._in_flight.get(model, 0) + 1
        self._last_used[model] = time.monotonic()

    def end(self, model: str) -> None:
        self._in_flight[model] = max(0, self._in_flight.get(model, 0) - 1)
        self._last_used[model] = time.monotonic()

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    def last_used(self, model: str) -> float | None:
        return self._last_used.get(model)


class MeteredBackend:
    """See the module docstring. Only attributes the backend has exist here."""

    def __init__(
        self, backend: Backend, record: RequestRecord | None, activity: BackendActivity | None
    ) -> None:
        self._backend = backend
        self._model = backend.model
        self._record = record
        self._activity = activity

    @property
    def unwrapped(self) -> Backend:
        return self._backend

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)  # AttributeError: the backend lacks it too
        wrap = _WRAPPERS.get(name)
        return wrap(self, value) if wrap is not None else value

    # -- wrappers ------------------------------------------------------------------------------

    def _wrap_generate(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        async def metered(*args: Any, **kwargs: Any) -> Any:
            stream = await generate(*args, **kwargs)
            self._begin()
            return OpenStream(self._events(stream), stream.replica, self._ender(stream))

        return metered

    def _wrap_relay(self, relay: Callable[..., Any]) -> Callable[..., Any]:
        async def metered(*args: Any, **kwargs: Any) -> Relayed:
            self._begin()
            try:
                answer: Relayed = await relay(*args, **kwargs)
            finally:
                self._end()
            if self._record is not None:
                self._record.output()
                self._note_usage(answer.data)
            return answer

        return metered

    def _wrap_relay_stream(self, relay_stream: Callable[..., Any]) -> Callable[..., Any]:
        async def metered(endpoint: RelayEndpoint, request: Any, keep_usage: bool) -> Any:
            # usage always, to meter the request; left out here for a client that did not ask
            stream = await relay_stream(endpoint, request, True)
            self._begin()
            chunks = self._chunks(stream, keep_usage)
            return OpenStream(chunks, stream.replica, self._ender(stream))

        return metered

    def _wrap_embed(self, embed: Callable[..., Any]) -> Callable[..., Any]:
        async def metered(*args: Any, **kwargs: Any) -> EmbeddingResult:
            self._begin()
            try:
                result: EmbeddingResult = await embed(*args, **kwargs)
            finally:
                self._end()
            if self._record is not None:
                self._record.output()
                self._record.usage(result.prompt_tokens, 0)
            return result

        return metered

    # -- helpers -------------------------------------------------------------------------------

    # A shutdown's drain ends a stream still waiting for its backend by cancelling it here;
    # ``cut_off_error`` turns that into an error the surface ends its stream with.

    async def _events(self, stream: OpenStream[ev.Event]) -> AsyncIterator[ev.Event]:
        record = self._record
        try:
            async for event in stream:
                if record is not None:
                    if isinstance(event, _OUTPUT_EVENTS):
                        record.output()
                    elif isinstance(event, ev.Usage):
                        record.usage(
                            event.prompt_tokens, event.completion_tokens, event.cached_tokens
                        )
                yield event
        except asyncio.CancelledError:
            if (cut := cut_off_error()) is None:
                raise
            self._failed(cut)
            raise cut from None
        except Exception as exc:
            self._failed(exc)
            raise

    async def _chunks(self, stream: OpenStream[bytes], keep_usage: bool) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                if self._record is not None:
                    self._record.output()
                    if b'"usage"' in chunk:
                        self._note_usage(chunk)
                if keep_usage:
                    yield chunk
                elif (unasked := without_usage(chunk)) is not None:
                    yield unasked
        except asyncio.CancelledError:
            if (cut := cut_off_error()) is None:
                raise
            self._failed(cut)
            raise cut from None
        except Exception as exc:
            self._failed(exc)
            raise

    def _failed(self, error: Exception) -> None:
        """A stream that failed after it started: its record says why (the status stays the
        200 that went out)."""
        if self._record is not None:
            if isinstance(error, GatewayError):
                code = error.code or error.error_type
            else:
                code = InternalError.default_code
            self._record.error_type = code

    def _note_usage(self, data: bytes) -> None:
        assert self._record is not None
        prompt = _PROMPT_TOKENS.search(data)
        completion = _COMPLETION_TOKENS.search(data)
        cached = _CACHED_TOKENS.search(data)
        self._record.usage(
            int(prompt.group(1)) if prompt else None,
            int(completion.group(1)) if completion else None,
            int(cached.group(1)) if cached else None,
        )

    def _begin(self) -> None:
        if self._activity is not None:
            self._activity.begin(self._model)

    def _end(self) -> None:
        if self._activity is not None:
            self._activity.end(self._model)

    def _ender(self, stream: OpenStream[Any]) -> Callable[[], Any]:
        ended = False

        async def cleanup() -> None:
            nonlocal ended
            try:
                await stream.aclose()
            finally:
                if not ended:
                    ended = True
                    self._end()

        return cleanup


_WRAPPERS: dict[str, Callable[[MeteredBackend, Any], Any]] = {
    "generate": MeteredBackend._wrap_generate,
    "relay": MeteredBackend._wrap_relay,
    "relay_stream": MeteredBackend._wrap_relay_stream,
    "embed": MeteredBackend._wrap_embed,
}
