"""Request limits, enforced once for every surface.

- Per HTTP request (called by ``gateway.middleware.RequestMiddleware``): ``start_budget``
  starts the request's clock and makes the limits reachable as ``current_budget()`` for the
  request's context; ``read_body`` answers 413 to a body larger than
  ``server.max_body_bytes`` before any handler runs, whether it announced its length or
  streams in chunks without one (the body is counted as it arrives and handed on only when
  complete; llmgate's routes read whole JSON bodies anyway).
- ``LimitedBackend``: ``gateway.dispatch.open_first`` wraps every backend it opens in one
  (``guard``). Before the backend sees a request it checks the number of messages
  (``server.max_messages``: a 400 naming ``messages``) and the model's ``max_tokens_cap``
  (``max_tokens_policy``: clamp silently, or a 400 naming ``max_tokens``), on the core
  ``GenerationRequest`` every surface builds and on an OpenAI request relayed as sent. Then
  it holds the backend to the request's deadline (``request_timeout``, the model's or the
  server's, counted from arrival): past it, the backend's stream is closed (the engine stops,
  the upstream connection drops) and ``DeadlineExceededError`` (504 ``backend_timeout``) is
  raised: a status before the headers went out, an error frame after.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from starlette.types import Message, Receive, Scope, Send

from backends.errors import DeadlineExceededError, InvalidRequestError, PayloadTooLargeError
from backends.protocol import Backend, OpenStream
from gateway.errors import error_response

T = TypeVar("T")

_BUDGET: contextvars.ContextVar[RequestBudget | None] = contextvars.ContextVar(
    "llmgate_request_budget", default=None
)


@dataclass(frozen=True)
class ModelLimits:
    """One model's own limits (its config entry's keys)."""

    max_tokens_cap: int | None = None
    max_tokens_policy: Literal["clamp", "reject"] = "clamp"
    request_timeout: float | None = None


@dataclass(frozen=True)
class RequestLimits:
    """The server's limits, and each model's by public name (adapters share their entry's)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_messages: int | None = None
    request_timeout: float | None = None
    models: dict[str, ModelLimits] | None = None

    @classmethod
    def from_config(cls, config: Any) -> RequestLimits:
        """From a ``GatewayConfig`` (typed loosely: this module is imported by its users)."""
        server = config.server
        models: dict[str, ModelLimits] = {}
        for entry in config.models:
            own = ModelLimits(entry.max_tokens_cap, entry.max_tokens_policy, entry.request_timeout)
            for name in entry.public_names():
                models[name] = own
        return cls(server.max_body_bytes, server.max_messages, server.request_timeout, models)

    def of(self, model: str) -> ModelLimits:
        return (self.models or {}).get(model) or ModelLimits()


@dataclass(frozen=True)
class RequestBudget:
    """The limits of the request being served and when it arrived (the loop's clock)."""

    limits: RequestLimits
    started: float

    def deadline(self, model: str) -> float | None:
        timeout = self.limits.of(model).request_timeout or self.limits.request_timeout
        return None if timeout is None else self.started + timeout


def current_budget() -> RequestBudget | None:
    return _BUDGET.get()


def guard(backend: Backend) -> Backend:
    """``backend`` held to the current request's limits (itself outside a request)."""
    budget = current_budget()
    if budget is None:
        return backend
    limited: Backend = LimitedBackend(backend, budget)  # a proxy: forwards every attribute
    return limited


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the requests whose body is read first


def start_budget(limits: RequestLimits) -> contextvars.Token[RequestBudget | None]:
    """The request's clock starts now; ``current_budget()`` is its budget until
    ``reset_budget``."""
    return _BUDGET.set(RequestBudget(limits, asyncio.get_running_loop().time()))


def reset_budget(token: contextvars.Token[RequestBudget | None]) -> None:
    _BUDGET.reset(token)


async def read_body(
    limits: RequestLimits, scope: Scope, receive: Receive, send: Send
) -> Message | None:
    """The whole body as one ``http.request`` message, counted as it arrives (None: answered
    413, or the client left)."""
    limit = limits.max_body_bytes
    announced = _content_length(scope)
    if announced is not None and announced > limit:
        await _too_large(limits, scope, receive, send)
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _too_large(limits, scope, receive, send)
            return None
        if not message.get("more_body", False) and not chunks:
            return {"type": "http.request", "body": chunk}  # the usual case: one message
        chunks.append(chunk)
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks)}


def replaying(body: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then what ``receive`` gives."""
    replay = [body]

    async def replayed() -> Message:
        return replay.pop() if replay else await receive()

    return replayed


async def _too_large(limits: RequestLimits, scope: Scope, receive: Receive, send: Send) -> None:
    error = PayloadTooLargeError(
        f"request body is larger than {limits.max_body_bytes} bytes (server.max_body_bytes)"
    )
    response = error_response(error, scope["path"])
    response.headers["connection"] = "close"  # the rest of the body is never read
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- per request: messages, max_tokens, the deadline ------------------------------------------


def check_messages(count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise InvalidRequestError(
            f"too many messages: {count}, this server accepts at most {limit} "
            "(server.max_messages)",
            param="messages",
            code="too_many_messages",
        )


def capped_tokens(requested: int | None, model: str, limits: ModelLimits) -> int | None:
    """``requested`` under the model's cap: the cap when unset or (clamp) above it; a 400
    naming ``max_tokens`` above it with ``reject``."""
    cap = limits.max_tokens_cap
    if cap is None:
        return requested
    if requested is None:
        return cap
    if requested <= cap:
        return requested
    if limits.max_tokens_policy == "reject":
        raise InvalidRequestError(
            f"max_tokens is {requested}; model '{model}' allows at most {cap}",
            param="max_tokens",
            code="max_tokens_exceeded",
        )
    return cap


class LimitedBackend:
    """A backend held to one request's limits (see the module docstring). Forwards every
    other attribute, so protocol checks answer as for the backend itself."""

    def __init__(self, backend: Backend, budget: RequestBudget) -> None:
        self._backend = backend
        self._budget = budget
        self._limits = budget.limits.of(backend.model)
        self._deadline = budget.deadline(backend.model)

    @property
    def unwrapped(self) -> Backend:
        return self._backend

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        wrap = _WRAPPERS.get(name)
        return wrap(self, value) if wrap is not None else value

    def _check(self, request: Any, endpoint: str | None = None) -> Any:
        """``request`` (a ``GenerationRequest``, or an OpenAI wire request relayed to
        ``endpoint``) within the limits: too many messages or (reject) tokens raise a 400."""
        messages = getattr(request, "messages", None)
        if messages is not None:
            check_messages(len(messages), self._budget.limits.max_messages)
        if endpoint is None:  # the core request every surface builds
            capped = capped_tokens(request.max_tokens, self._backend.model, self._limits)
            return request if capped == request.max_tokens else replace(request, max_tokens=capped)
        if endpoint == "/embeddings":
            return request
        name = "max_tokens"
        if getattr(request, "max_completion_tokens", None) is not None:  # chat's newer name
            name = "max_completion_tokens"
        wanted = getattr(request, name, None)
        if wanted is None and endpoint == "/completions":
            return request  # the upstream's default (16 tokens, as OpenAI)
        capped = capped_tokens(wanted, self._backend.model, self._limits)
        return request if capped == wanted else request.model_copy(update={name: capped})

    async def _within(
        self, work: Awaitable[T], cleanup: Callable[[], Awaitable[None]] | None = None
    ) -> T:
        if self._deadline is None:
            return await work
        try:
            async with asyncio.timeout_at(self._deadline):
                return await work
        except TimeoutError:
            if cleanup is not None:
                await cleanup()
            raise self._expired() from None

    def _expired(self) -> DeadlineExceededError:
        timeout = self._deadline - self._budget.started if self._deadline is not None else 0
        return DeadlineExceededError(
            f"model '{self._backend.model}' did not finish within the request deadline "
            f"({timeout:g} s, request_timeout); the request was stopped"
        )

    def _bounded(self, stream: OpenStream[T]) -> OpenStream[T]:
        if self._deadline is None:
            return stream

        async def items() -> AsyncIterator[T]:
            while True:
                try:
                    item = await self._within(anext(stream), stream.aclose)
                except StopAsyncIteration:
                    return
                yield item

        return OpenStream(items(), stream.replica, stream.aclose)

    # Without a deadline a wrapper only checks the request and hands back the backend's own
    # awaitable (no coroutine of its own around it).

    def _wrap_generate(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        if self._deadline is None:

            def checked(request: Any, *args: Any, **kwargs: Any) -> Any:
                return generate(self._check(request), *args, **kwargs)

            return checked

        async def limited(request: Any, *args: Any, **kwargs: Any) -> Any:
            stream = await self._within(generate(self._check(request), *args, **kwargs))
            return self._bounded(stream)

        return limited

    def _wrap_relay(self, relay: Callable[..., Any]) -> Callable[..., Any]:
        if self._deadline is None:

            def checked(endpoint: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                return relay(endpoint, self._check(request, endpoint), *args, **kwargs)

            return checked

        async def limited(endpoint: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            return await self._within(
                relay(endpoint, self._check(request, endpoint), *args, **kwargs)
            )

        return limited

    def _wrap_relay_stream(self, relay_stream: Callable[..., Any]) -> Callable[..., Any]:
        if self._deadline is None:
            return self._wrap_relay(relay_stream)

        async def limited(endpoint: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            opened = relay_stream(endpoint, self._check(request, endpoint), *args, **kwargs)
            return self._bounded(await self._within(opened))

        return limited

    def _wrap_embed(self, embed: Callable[..., Any]) -> Callable[..., Any]:
        if self._deadline is None:
            return embed

        async def limited(*args: Any, **kwargs: Any) -> Any:
            return await self._within(embed(*args, **kwargs))

        return limited


_WRAPPERS: dict[str, Callable[[LimitedBackend, Any], Any]] = {
    "generate": LimitedBackend._wrap_generate,
    "relay": LimitedBackend._wrap_relay,
    "relay_stream": LimitedBackend._wrap_relay_stream,
    "embed": LimitedBackend._wrap_embed,
}
