"""``AdapterBackend``: a LoRA adapter of an in-process model, served as its own public model
(``backends.protocol.HasVariants``), written once for llama.cpp and transformers."""

from __future__ import annotations

from backends.local.backend import LocalBackend
from backends.model_types import ModelCapabilities, ModelPlacement
from backends.protocol import EventStream, Health
from backends.requests import GenerationRequest


class AdapterBackend:
    """The adapter ``adapter`` of ``base``: its requests are ``base``'s, decoded with the
    adapter applied. Loading loads the base (once, shared); unloading and closing are the
    base's business, so both are no-ops here."""

    def __init__(self, base: LocalBackend, adapter: str) -> None:
        self.model = adapter
        self.base = base
        self.kind = base.kind

    @property
    def loaded(self) -> bool:
        return self.base.loaded

    async def load(self) -> None:
        await self.base.load()

    async def unload(self) -> None:
        return None

    async def health(self) -> Health:
        return await self.base.health()

    async def generate(self, request: GenerationRequest) -> EventStream:
        return await self.base.generate(request, adapter=self.model)

    async def capabilities(self) -> ModelCapabilities | None:
        return await self.base.capabilities()

    def placement(self) -> ModelPlacement | None:
        return self.base.placement()

    async def aclose(self) -> None:
        return None
