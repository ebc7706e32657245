"""ModelRouter: public model names and aliases -> backends; their lifecycle; the model list."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from backends import create_backend
from backends.base import Backend, Health
from backends.errors import ModelNotFoundError
from backends.schemas import ModelCard
from backends.settings import BackendSettings

log = logging.getLogger(__name__)

BackendFactory = Callable[[BackendSettings, Path | None], Backend]


class ModelRouter:
    """Resolves the ``model`` a client sends to a backend. Unknown names raise
    ``ModelNotFoundError`` (404); there is never a silent default."""

    def __init__(self, entries: Iterable[tuple[BackendSettings, Backend]]) -> None:
        self._entries = list(entries)
        self._by_name: dict[str, Backend] = {}
        for settings, backend in self._entries:
            for name in [settings.name, *settings.aliases]:
                self._by_name[name] = backend

    @classmethod
    def from_settings(
        cls,
        models: Iterable[BackendSettings],
        base_dir: Path | None = None,
        factory: BackendFactory = create_backend,
    ) -> ModelRouter:
        return cls((settings, factory(settings, base_dir)) for settings in models)

    def resolve(self, name: str, allowed: Iterable[str] | None = None) -> Backend:
        backend = self._by_name.get(name)
        if backend is None:
            visible = sorted(self.public_names(allowed))
            hint = f"; available: {', '.join(visible)}" if visible else ""
            raise ModelNotFoundError(f"model '{name}' not found{hint}")
        return backend

    def chain(self, backend: Backend, allowed: Iterable[str] | None = None) -> list[Backend]:
        """``backend`` then its configured fallbacks (those this key may use), no repeats."""
        settings = next(s for s, b in self._entries if b is backend)
        chain = [backend]
        for name in settings.fallbacks:
            fallback = self._by_name[name]
            if fallback not in chain and self.is_allowed(fallback, allowed):
                chain.append(fallback)
        return chain

    def public_names(self, allowed: Iterable[str] | None = None) -> list[str]:
        names = [settings.name for settings, _ in self._entries]
        if allowed is None:
            return names
        allowed_backends = {id(self._by_name[a]) for a in allowed if a in self._by_name}
        return [s.name for s, b in self._entries if id(b) in allowed_backends]

    def is_allowed(self, backend: Backend, allowed: Iterable[str] | None) -> bool:
        if allowed is None:
            return True
        return any(self._by_name.get(name) is backend for name in allowed)

    def list_models(self, allowed: Iterable[str] | None = None) -> list[ModelCard]:
        visible = set(self.public_names(allowed))
        return [
            ModelCard(
                id=settings.name,
                aliases=list(settings.aliases),
                backend=settings.backend,
                loaded=backend.loaded,
            )
            for settings, backend in self._entries
            if settings.name in visible
        ]

    def card(self, name: str, allowed: Iterable[str] | None = None) -> ModelCard:
        backend = self.resolve(name, allowed)
        if not self.is_allowed(backend, allowed):
            raise ModelNotFoundError(f"model '{name}' not found")
        return next(c for c in self.list_models(allowed) if c.id == backend.model)

    async def start(self) -> None:
        """Load every model marked ``preload``; a failure stops startup."""
        for settings, backend in self._entries:
            if settings.preload:
                log.info("loading model %s (%s)", settings.name, settings.backend)
                await backend.load()

    async def health(self) -> dict[str, Health]:
        return {settings.name: await backend.health() for settings, backend in self._entries}

    def preloaded(self) -> list[tuple[BackendSettings, Backend]]:
        return [(s, b) for s, b in self._entries if s.preload]

    async def aclose(self) -> None:
        for settings, backend in self._entries:
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing model %s failed", settings.name)
