"""ModelRouter: public model names and aliases -> backends; their lifecycle; the model list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from backends.errors import GatewayError, InvalidRequestError, ModelNotFoundError
from backends.model_types import (
    DownloadProgress,
    ModelCapabilities,
    ModelCard,
    ModelPlacement,
    ModelState,
)
from backends.protocol import (
    Backend,
    HasCapabilities,
    HasPlacement,
    HasVariants,
    Health,
    HealthStatus,
)
from backends.registry import BackendSettings, create_backend
from backends.settings import Task
from gateway.metered_backend import BackendActivity

log = logging.getLogger(__name__)

BackendFactory = Callable[[BackendSettings, Path | None], Backend]

# The routes that serve a model of each task, as /v1/models lists them.
ENDPOINTS: dict[Task, tuple[str, ...]] = {
    "generate": (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/api/chat",
        "/api/generate",
        "/",
    ),
    "embed": ("/v1/embeddings", "/api/embed", "/api/embeddings"),
}


@dataclass(frozen=True)
class Route:
    """One public model: its names, what serves it, and whether this route owns the
    backend's lifecycle (a variant's lifecycle belongs to its parent)."""

    name: str
    aliases: tuple[str, ...]
    fallbacks: tuple[str, ...]
    preload: bool
    kind: str
    backend: Backend
    task: Task = "generate"
    parent: str | None = None

    @classmethod
    def of(cls, settings: BackendSettings, backend: Backend) -> list[Route]:
        own = cls(
            settings.name,
            tuple(settings.aliases),
            tuple(settings.fallbacks),
            settings.preload,
            settings.backend,
            backend,
            settings.task,
        )
        variants = backend.variants() if isinstance(backend, HasVariants) else []
        return [own] + [
            cls(v.model, (), (), False, settings.backend, v, settings.task, parent=settings.name)
            for v in variants
        ]


class ModelRouter:
    """Resolves the ``model`` a client sends to a backend. Unknown names raise
    ``ModelNotFoundError`` (404); there is never a silent default."""

    def __init__(
        self,
        entries: Iterable[tuple[BackendSettings, Backend]],
        activity: BackendActivity | None = None,
    ) -> None:
        # requests in flight and last use per model, kept by the metered backends
        self.activity = activity or BackendActivity()
        self._routes = [route for s, b in entries for route in Route.of(s, b)]
        self._by_name: dict[str, Backend] = {}
        for route in self._routes:
            for name in [route.name, *route.aliases]:
                self._by_name[name] = route.backend

    @classmethod
    def from_settings(
        cls,
        models: Iterable[BackendSettings],
        base_dir: Path | None = None,
        factory: BackendFactory = create_backend,
        activity: BackendActivity | None = None,
    ) -> ModelRouter:
        return cls(((settings, factory(settings, base_dir)) for settings in models), activity)

    def resolve(self, name: str, allowed: Iterable[str] | None = None) -> Backend:
        backend = self._by_name.get(name)
        if backend is None:
            visible = sorted(self.public_names(allowed))
            hint = f"; available: {', '.join(visible)}" if visible else ""
            raise ModelNotFoundError(f"model '{name}' not found{hint}")
        return backend

    def require_task(self, backend: Backend, name: str, task: Task, endpoint: str) -> None:
        """Refuse (400) a request for ``endpoint`` to a model that serves the other task."""
        route = self._route(backend)
        if route.task != task:
            served = ", ".join(ENDPOINTS[route.task])
            raise InvalidRequestError(
                f"model '{name}' is {_TASK_NAMES[route.task]}: it serves {served}, not {endpoint}",
                param="model",
                code="model_not_supported",
            )

    def _route(self, backend: Backend) -> Route:
        return next(r for r in self._routes if r.backend is backend)

    def chain(self, backend: Backend, allowed: Iterable[str] | None = None) -> list[Backend]:
        """``backend`` then its configured fallbacks (those this key may use), no repeats."""
        route = self._route(backend)
        chain = [backend]
        for name in route.fallbacks:
            fallback = self._by_name[name]
            if fallback not in chain and self.is_allowed(fallback, allowed):
                chain.append(fallback)
        return chain

    def public_names(self, allowed: Iterable[str] | None = None) -> list[str]:
        names = [route.name for route in self._routes]
        if allowed is None:
            return names
        allowed_backends = {id(self._by_name[a]) for a in allowed if a in self._by_name}
        return [r.name for r in self._routes if id(r.backend) in allowed_backends]

    def is_allowed(self, backend: Backend, allowed: Iterable[str] | None) -> bool:
        if allowed is None:
            return True
        return any(self._by_name.get(name) is backend for name in allowed)

    async def list_models(self, allowed: Iterable[str] | None = None) -> list[ModelCard]:
        visible = set(self.public_names(allowed))
        routes = [route for route in self._routes if route.name in visible]
        found = await asyncio.gather(*(_capabilities(route.backend) for route in routes))
        healths = await asyncio.gather(*(route.backend.health() for route in routes))
        return [
            ModelCard(
                id=route.name,
                aliases=list(route.aliases),
                backend=route.kind,
                loaded=route.backend.loaded,
                state=_STATES[health.status],
                load_error=health.detail if health.status == "error" else None,
                parent=route.parent,
                max_model_len=capabilities.context_length if capabilities else None,
                task=route.task,
                endpoints=list(ENDPOINTS[route.task]),
                capabilities=capabilities,
                download=_download(route.backend),
                placement=_placement(route.backend),
            )
            for route, capabilities, health in zip(routes, found, healths, strict=True)
        ]

    async def card(self, name: str, allowed: Iterable[str] | None = None) -> ModelCard:
        backend = self.resolve(name, allowed)
        if not self.is_allowed(backend, allowed):
            raise ModelNotFoundError(f"model '{name}' not found")
        return next(c for c in await self.list_models(allowed) if c.id == backend.model)

    async def start(self) -> None:
        """Load every model marked ``preload``. One that fails is logged in one line and the
        others still serve: its health says why (``/health`` is 503 until it loads), and its
        next request tries again (a 503 naming the reason if it fails again)."""
        for route in self.preloaded():
            log.info("loading model %s (%s)", route.name, route.kind)
            try:
                await route.backend.load()
            except GatewayError as exc:
                log.error(
                    "model %s failed to load: %s (the other models serve; its next request "
                    "tries again)",
                    route.name,
                    exc.message,
                )

    async def health(self) -> dict[str, Health]:
        return {route.name: await route.backend.health() for route in self._routes}

    @property
    def routes(self) -> list[Route]:
        """Every public model (variants included), in config order."""
        return list(self._routes)

    def preloaded(self) -> list[Route]:
        return [route for route in self._routes if route.preload]

    async def aclose(self) -> None:
        for route in self._routes:
            if route.parent is not None:
                continue
            try:
                await route.backend.aclose()
            except Exception:
                log.exception("closing model %s failed", route.name)


# A model's state in /v1/models, from its health ("degraded": an upstream is serving, with
# some replicas down).
_STATES: dict[HealthStatus, ModelState] = {
    "ok": "loaded",
    "degraded": "loaded",
    "loading": "loading",
    "unloaded": "unloaded",
    "error": "error",
}

_TASK_NAMES: dict[Task, str] = {
    "generate": "a text-generation model",
    "embed": "an embedding model",
}


def _download(backend: Backend) -> DownloadProgress | None:
    """The download of the backend's weights under way (``load_progress``), if any."""
    progress = getattr(backend, "load_progress", None)
    if progress is None:
        return None
    return DownloadProgress(
        source=progress.source, bytes_done=progress.bytes_done, bytes_total=progress.bytes_total
    )


def _placement(backend: Backend) -> ModelPlacement | None:
    return backend.placement() if isinstance(backend, HasPlacement) else None


async def _capabilities(backend: Backend) -> ModelCapabilities | None:
    if not isinstance(backend, HasCapabilities):
        return None
    try:
        return await backend.capabilities()
    except Exception:  # a listing never fails because one model could not say
        log.exception("model %s: capabilities unavailable", backend.model)
        return None
