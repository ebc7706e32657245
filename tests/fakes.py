"""Test doubles, named as such. ``FakeBackend`` speaks the Backend protocol without weights:
it "generates" a scripted list of tokens, optionally slowly, and can fail on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

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
            yield Usage(script.prompt_tokens, produced)
        finally:
            self.streams_closed += 1


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
