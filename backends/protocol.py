"""The Backend protocol: what the router and every surface need from an engine or an upstream.

A backend serves a ``GenerationRequest`` (``backends.requests``) as an ``OpenStream`` of events
(``backends.events``). A backend that fronts an OpenAI-compatible server may also implement
``OpenAIRelay``, so that an OpenAI request (chat, completions, embeddings) reaches it, and its
answer comes back, without being decoded and re-encoded (docs/architecture.md, "The relay").
A backend of an embedding model (``task: embed``) implements ``Embedder``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.events import Event
from backends.model_types import ModelCapabilities, ModelPlacement
from backends.openai_types import OpenAIRequest
from backends.requests import GenerationRequest

T = TypeVar("T")

# "degraded": an upstream is unreachable; the gateway still serves (fallbacks, other models).
HealthStatus = Literal["ok", "degraded", "loading", "unloaded", "error"]


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    detail: str | None = None


class OpenStream(Generic[T]):
    """A started request's output: iterate for its items; ``aclose`` stops the work behind it
    promptly (the engine drops the sequence, the upstream connection is closed) and is
    idempotent. ``replica`` is the upstream URL serving it (None for in-process engines).

    ``cleanup`` releases what the stream holds even if it was never iterated (an async
    generator that never started does not run its ``finally`` on ``aclose``)."""

    def __init__(
        self,
        items: AsyncIterator[T],
        replica: str | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._items = items
        self.replica = replica
        self._cleanup = cleanup
        self._closed = False

    def __aiter__(self) -> OpenStream[T]:
        return self

    async def __anext__(self) -> T:
        return await anext(self._items)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._items, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._cleanup is not None:
                await self._cleanup()


EventStream = OpenStream[Event]


@dataclass(frozen=True, slots=True)
class Relayed:
    """A whole answer already encoded as JSON in the client's terms: an upstream's reply
    relayed, or one a surface encoded; ``replica`` is the upstream that gave it, if any."""

    data: bytes
    replica: str | None = None


@runtime_checkable
class Backend(Protocol):
    """``load``/``unload`` are idempotent and do blocking work off the event loop.

    ``generate`` returns once the first event is ready: the request was checked, waited its
    turn, and the engine or upstream started answering. What goes wrong before that (a bad
    field, a full queue, an unreachable upstream) raises there, where a caller may still fall
    back or answer with a status; later failures raise from the stream. Methods raise only
    ``backends.errors`` exceptions.
    """

    model: str
    kind: str

    @property
    def loaded(self) -> bool: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    async def health(self) -> Health: ...

    async def generate(self, request: GenerationRequest) -> EventStream: ...

    async def aclose(self) -> None: ...


# The OpenAI endpoints a relay passes through (paths under the upstream's base URL).
RelayEndpoint = Literal["/chat/completions", "/completions", "/embeddings"]


@runtime_checkable
class OpenAIRelay(Protocol):
    """A backend that can pass an OpenAI request (a pydantic wire request with a ``model``)
    to ``endpoint`` as sent, vendor extras included, and relay the upstream's bytes, only
    ``model`` rewritten to the name the client used. ``keep_usage``: keep the stream's usage
    chunk (the client asked for ``stream_options.include_usage``)."""

    async def relay(self, endpoint: RelayEndpoint, request: OpenAIRequest) -> Relayed: ...

    async def relay_stream(
        self, endpoint: RelayEndpoint, request: OpenAIRequest, keep_usage: bool
    ) -> OpenStream[bytes]: ...


@runtime_checkable
class Embedder(Protocol):
    """A backend that embeds texts (or token ids): ``embed`` returns one vector per input, in
    order, and the exact count of tokens read. It raises ``InvalidRequestError`` for a model
    that does not embed (a text-generation model), ``ContextLengthExceededError`` for an input
    longer than the model reads (never silently truncated), ``UnsupportedParameterError`` for
    ``dimensions`` (or token-id input) the model cannot honour, ``QueueFullError`` /
    ``BackendUnavailableError`` like ``generate``."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that can count a request's prompt tokens without generating: exactly the
    ``Usage.prompt_tokens`` that ``generate`` would report for it (the chat template, tools
    and all). Raises like ``generate`` before its first event (400s for what the model
    cannot take, ``BackendUnavailableError``)."""

    async def count_tokens(self, request: GenerationRequest) -> int: ...


@runtime_checkable
class HasVariants(Protocol):
    """A backend whose engine also serves other public models (LoRA adapters over its
    weights); each variant is a ``Backend`` whose ``model`` is its public name and whose
    lifecycle belongs to this one."""

    def variants(self) -> list[Backend]: ...


@runtime_checkable
class HasPlacement(Protocol):
    """An in-process backend that can say where its loaded model runs (``GET /v1/models``):
    CPU or GPU, offloaded layers, sequences per batch. None while not loaded."""

    def placement(self) -> ModelPlacement | None: ...


@runtime_checkable
class HasCapabilities(Protocol):
    """A backend that can say what its model supports (``GET /v1/models``): tools, JSON
    schema, reasoning, context length — discovered from the model's template and engine, or
    asked of its upstream. None: not known now (a model not loaded, an upstream not reached);
    it never loads a model or waits long."""

    async def capabilities(self) -> ModelCapabilities | None: ...
