"""Test doubles, named as such. ``FakeBackend`` speaks the Backend protocol without weights:
it "generates" a scripted list of tokens, optionally slowly, and can fail on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.errors import GatewayError
from backends.events import Event, Finished, Started, TextDelta, Usage
from backends.protocol import EventStream, Health, OpenStream
from backends.registry import BackendSettings
from backends.requests import GenerationRequest


@dataclass
class FakeScript:
    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    delay: float = 0.0
    fail_before_first: GatewayError | Exception | None = None
    fail_after_tokens: int | None = None
    fail_with: GatewayError | Exception | None = None
    prompt_tokens: int = 7
    cached_tokens: int | None = None  # of those, read from a prefix cache (None: not known)


class FakeBackend:
    """A Backend test double. ``tokens_generated`` counts what it produced, so tests can prove
    that closing a stream stopped generation."""

    kind = "fake"

    def __init__(self, name: str, script: FakeScript | None = None) -> None:
        self.model = name
        self.script = script or FakeScript()
        self.tokens_generated = 0
        self.streams_closed = 0
        self.requests: list[GenerationRequest] = []
        self._loaded = False
        self.closed = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        self._loaded = True

    async def unload(self) -> None:
        self._loaded = False

    async def health(self) -> Health:
        return Health("ok" if self._loaded else "unloaded")

    async def generate(self, request: GenerationRequest) -> EventStream:
        self.requests.append(request)
        if self.script.fail_before_first is not None:
            raise self.script.fail_before_first
        return OpenStream(self._events(request))

    async def aclose(self) -> None:
        self.closed = True

    async def _events(self, request: GenerationRequest) -> AsyncIterator[Event]:
        script = self.script
        budget = request.max_tokens or len(script.tokens)
        try:
            produced = 0
            for index in range(request.n):
                yield Started(index)
                for i, token in enumerate(script.tokens[:budget]):
                    if script.fail_after_tokens is not None and i == script.fail_after_tokens:
                        raise script.fail_with or RuntimeError("fake engine exploded")
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    self.tokens_generated += 1
                    produced += 1
                    yield TextDelta(index, token)
                yield Finished(index, "length" if budget < len(script.tokens) else "stop")
            yield Usage(script.prompt_tokens, produced, script.cached_tokens)
        finally:
            self.streams_closed += 1


class FakeLoadingBackend(FakeBackend):
    """A FakeBackend with a lifecycle to watch: it counts ``loads`` and ``unloads``; a load
    waits for ``load_gate`` (when set) and raises ``load_error`` (when set); its health says
    loading / error (with the reason) as ``LocalBackend``'s does. A stream stops after its
    first token while ``hold`` is set and not released (``holding`` is set then)."""

    def __init__(self, name: str, script: FakeScript | None = None) -> None:
        super().__init__(name, script)
        self.loads = self.unloads = 0
        self.load_gate: asyncio.Event | None = None
        self.load_error: Exception | None = None
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self._loading = False
        self._error: str | None = None

    async def load(self) -> None:
        if self._loaded:
            return
        self.loads += 1
        self._loading = True
        try:
            if self.load_gate is not None:
                await self.load_gate.wait()
            if self.load_error is not None:
                self._error = str(self.load_error)
                raise self.load_error
        finally:
            self._loading = False
        self._loaded, self._error = True, None

    async def unload(self) -> None:
        if self._loaded:
            self.unloads += 1
        self._loaded = False

    async def health(self) -> Health:
        if self._loaded:
            return Health("ok")
        if self._loading:
            return Health("loading")
        if self._error is not None:
            return Health("error", self._error)
        return Health("unloaded")

    async def _events(self, request: GenerationRequest) -> AsyncIterator[Event]:
        async for event in super()._events(request):
            yield event
            if isinstance(event, TextDelta) and self.hold is not None:
                self.holding.set()
                await self.hold.wait()


def fake_factory(
    scripts: dict[str, FakeScript] | None = None, registry: dict[str, FakeBackend] | None = None
):
    """A ``backend_factory`` for ``create_app`` that builds FakeBackends (kept in ``registry``)."""

    def build(settings: BackendSettings, _base_dir: Path | None) -> FakeBackend:
        backend = FakeBackend(settings.name, (scripts or {}).get(settings.name))
        if registry is not None:
            registry[settings.name] = backend
        return backend

    return build


class FakeEmbeddingModel:
    """An ``EmbeddingModel`` (``backends.local.embedding``) without weights: a text's tokens
    are its words (id = word length), a vector is ``[first id, length, pass number]``. It
    records every pass's batch; ``gate`` (when set) holds each pass until released, and
    ``entered`` is set once a pass has started; a batch holding ``poison`` fails."""

    def __init__(self, max_tokens: int = 16, vocab_size: int = 100) -> None:
        import threading

        from backends.model_types import ModelPlacement

        self.max_tokens = max_tokens
        self.dimensions = 3
        self.vocab_size = vocab_size
        self.placement = ModelPlacement(device="cpu", parallel=4, weights_bytes=1000)
        self.batches: list[list[list[int]]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.poison: int | None = None
        self.started = self.closed = False

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[len(word) for word in text.split()] for text in texts]

    def start(self) -> None:
        self.started = True

    def embed_batch(self, batch: list[list[int]]) -> list[Any]:
        from array import array

        self.batches.append(batch)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.poison is not None and any(self.poison in ids for ids in batch):
            raise RuntimeError("fake forward pass exploded")
        number = len(self.batches)
        return [array("f", [ids[0], len(ids), number]) for ids in batch]

    def close(self) -> None:
        self.closed = True


class FakeEmbedder(FakeBackend):
    """A FakeBackend that also embeds (``backends.protocol.Embedder``): input i's vector is
    ``[0.1, i, number of words or ids]`` (0.1 has no exact float32 value); usage counts
    words and ids. It records what it was asked."""

    def __init__(self, name: str, script: FakeScript | None = None) -> None:
        super().__init__(name, script)
        self.embed_requests: list[Any] = []

    async def embed(self, request: Any) -> Any:
        from array import array

        from backends.embeddings import EmbeddingResult

        self.embed_requests.append(request)
        if self.script.fail_before_first is not None:
            raise self.script.fail_before_first
        sizes = [len(x.split()) if isinstance(x, str) else len(x) for x in request.inputs]
        vectors = tuple(array("f", [0.1, i, n]) for i, n in enumerate(sizes))
        return EmbeddingResult(vectors, sum(sizes))


class FakeRelay(FakeBackend):
    """A FakeBackend that is an ``OpenAIRelay``: it answers ``relay`` with ``reply`` and
    records the endpoint and the request's JSON as it would go upstream."""

    def __init__(self, name: str, reply: bytes = b'{"relayed":true}') -> None:
        super().__init__(name)
        self.reply = reply
        self.relayed: list[tuple[str, dict[str, Any]]] = []

    async def relay(self, endpoint: str, request: Any) -> Any:
        from backends.protocol import Relayed

        self.relayed.append((endpoint, request.model_dump(exclude_unset=True)))
        return Relayed(self.reply, "http://upstream.test")

    async def relay_stream(self, endpoint: str, request: Any, keep_usage: bool) -> Any:
        raise NotImplementedError
