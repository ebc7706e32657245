"""Model lifecycle: which models are loaded, for how long, and what makes room for another.

``ModelLifecycle`` is the one place that loads and unloads models while the server runs:

- **On demand, once.** ``gateway.dispatch.open_first`` holds a ``lease`` on each backend it
  opens: the model is loaded first if it is not (concurrent first requests share one load), and
  it cannot be evicted while the lease is held; after that the request counts in
  ``BackendActivity`` (requests in flight) until its answer ends.
- **A budget.** ``server.max_loaded_models`` caps the in-process models (llama.cpp,
  transformers) loaded at once. Loading one more first unloads the least recently used idle
  ones; a model with requests in flight (or being opened) is never evicted. When every loaded
  model is busy the load is refused at once with a 503 ``backend_unavailable`` (retryable: a
  fallback may serve) rather than loading past the budget. Upstreams take no memory here and
  are not counted.
- **Idle unload.** A model entry's ``idle_unload_after`` (in-process only) unloads it after so
  long without requests; ``reap`` checks (the background task started by ``running`` calls it
  every ``REAP_INTERVAL`` seconds; tests call it with a fake clock). Ollama's ``keep_alive``
  on a request overrides it for that model (``set_keep_alive``): seconds or ``"5m"``, ``0``
  unload once idle, negative: keep loaded. As in Ollama it is the request's: the next request
  on the model that does not set one (any surface) brings back the entry's timeout.
  ``expires_in`` says when an idle model will go (Ollama's ``/api/ps`` ``expires_at``).
- **Failures.** A load that fails raises ``BackendUnavailableError`` (503) with the reason; the
  model's state is ``error`` until a load succeeds; other models keep serving.

A LoRA variant's lifecycle is its parent's: loading, unloading or leasing a variant acts on
the parent, and the variant's requests keep the parent busy. Times come from ``clock``, which
must be on ``time.monotonic``'s timeline (``BackendActivity`` stamps last use with it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from backends.errors import BackendUnavailableError, GatewayError
from backends.model_types import ModelState
from backends.protocol import Backend
from backends.registry import BackendSettings
from backends.settings import InProcessSettings
from gateway import request_models
from gateway.metered_backend import BackendActivity
from gateway.routing import ModelRouter, Route

log = logging.getLogger(__name__)

REAP_INTERVAL = 2.0  # seconds between idle checks


class ModelBusyError(GatewayError):
    """409: the model has requests in flight; unload it when they have finished."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "model_busy"


@dataclass
class _Managed:
    """One model whose lifecycle is managed: a configured entry and its variants' names."""

    route: Route
    names: tuple[str, ...]  # its public name and its variants' (activity is kept per name)
    in_process: bool
    idle_unload_after: float | None
    keep_alive: float | None = None  # a request's override of idle_unload_after
    keep_alive_set: bool = False
    loading: asyncio.Task[None] | None = None
    unloading: asyncio.Future[None] | None = None  # set while it is being unloaded
    loaded_at: float | None = None
    leases: int = 0
    error: str | None = field(default=None)

    @property
    def backend(self) -> Backend:
        return self.route.backend

    @property
    def ttl(self) -> float | None:
        return self.keep_alive if self.keep_alive_set else self.idle_unload_after


class ModelLifecycle:
    """See the module docstring. Used on the event loop only."""

    def __init__(
        self,
        routes: Iterable[Route],
        settings: Iterable[BackendSettings],
        activity: BackendActivity,
        max_loaded_models: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        by_name = {s.name: s for s in settings}
        routes = list(routes)
        self._activity = activity
        self._max_loaded = max_loaded_models
        self._clock = clock
        self._models: dict[str, _Managed] = {}
        for route in routes:
            if route.parent is not None:
                continue
            entry = by_name.get(route.name)
            in_process = isinstance(entry, InProcessSettings)
            ttl = entry.idle_unload_after if isinstance(entry, InProcessSettings) else None
            variants = tuple(r.name for r in routes if r.parent == route.name)
            self._models[route.name] = _Managed(route, (route.name, *variants), in_process, ttl)
        self._by_name = {name: m for m in self._models.values() for name in m.names}
        started = clock()
        for managed in self._models.values():
            if managed.backend.loaded:
                managed.loaded_at = started

    @classmethod
    def of(
        cls,
        router: ModelRouter,
        settings: Iterable[BackendSettings],
        max_loaded_models: int | None = None,
    ) -> ModelLifecycle:
        return cls(router.routes, settings, router.activity, max_loaded_models)

    # -- what clients and operators see ---------------------------------------------------------

    def state(self, name: str) -> tuple[ModelState, str | None]:
        """``name``'s state (its parent's, for a variant) and, for ``error``, the reason."""
        managed = self._managed(name)
        if managed.loading is not None:
            return "loading", None
        if managed.backend.loaded and managed.unloading is None:
            return "loaded", None
        if managed.error is not None:
            return "error", managed.error
        return "unloaded", None

    def manages(self, name: str) -> bool:
        return name in self._by_name

    def in_flight(self, name: str) -> int:
        """Requests being served or opened on ``name``'s model (its variants included)."""
        managed = self._managed(name)
        return managed.leases + sum(self._activity.in_flight(n) for n in managed.names)

    def idle_seconds(self, name: str) -> float | None:
        """Seconds since the model was last used or loaded (None: not loaded)."""
        managed = self._managed(name)
        if not managed.backend.loaded:
            return None
        return max(0.0, self._clock() - self._last_used(managed))

    def ttl(self, name: str) -> float | None:
        """The idle time after which the model is unloaded (None: never)."""
        return self._managed(name).ttl

    def expires_in(self, name: str) -> float | None:
        """Seconds until the loaded model is unloaded for idleness if no request comes (its
        whole timeout while it serves one); None: never (no timeout, an upstream, or not
        loaded)."""
        managed = self._managed(name)
        ttl = managed.ttl
        if ttl is None or not managed.in_process or not managed.backend.loaded:
            return None
        if not self._idle(managed):
            return ttl
        return max(0.0, self._last_used(managed) + ttl - self._clock())

    # -- loading and leasing ---------------------------------------------------------------------

    def lease(self, backend: Backend) -> AbstractAsyncContextManager[None]:
        """Hold ``backend``'s model loaded while a request is opened on it (loading it first,
        within the budget). Entering raises ``BackendUnavailableError`` when it cannot be
        loaded."""
        managed = self._by_name.get(backend.model)
        if managed is None:  # not a configured model (a test double): nothing to manage
            return nullcontext()
        return _Lease(self, managed)

    async def load(self, name: str) -> None:
        """Load ``name``'s model if it is not (idempotent; concurrent calls share one load)."""
        await self._ensure_loaded(self._managed(name))

    async def _ensure_loaded(self, managed: _Managed) -> None:
        while managed.unloading is not None:
            await asyncio.shield(managed.unloading)
        if managed.backend.loaded:
            return
        if managed.loading is None:
            victims = self._make_room(managed)  # raises before anything changes
            managed.loading = asyncio.create_task(self._load(managed, victims))
            managed.loading.add_done_callback(_retrieved)
        await asyncio.shield(managed.loading)

    async def _load(self, managed: _Managed, victims: list[_Managed]) -> None:
        try:
            for victim in victims:
                log.info("unloading %s to make room for %s", victim.route.name, managed.route.name)
                await self._unload(victim)
            log.info("loading model %s (%s)", managed.route.name, managed.route.kind)
            await managed.backend.load()
        except GatewayError as exc:
            managed.error = exc.message
            raise
        except Exception as exc:
            managed.error = f"model '{managed.route.name}' failed to load: {exc}"
            raise BackendUnavailableError(managed.error) from exc
        finally:
            managed.loading = None
        managed.error = None
        managed.loaded_at = self._clock()

    def _make_room(self, managed: _Managed) -> list[_Managed]:
        """The idle models to unload (least recently used first) so that ``managed`` fits."""
        if not managed.in_process or self._max_loaded is None:
            return []
        holding = [
            m
            for m in self._models.values()
            if m.in_process
            and m is not managed
            and m.unloading is None
            and (m.backend.loaded or m.loading is not None)
        ]
        excess = len(holding) + 1 - self._max_loaded
        if excess <= 0:
            return []
        idle = [m for m in holding if m.loading is None and self._idle(m)]
        if len(idle) < excess:
            busy = sorted(m.route.name for m in holding if m not in idle)
            raise BackendUnavailableError(
                f"model '{managed.route.name}' cannot be loaded now: server.max_loaded_models "
                f"is {self._max_loaded} and the loaded models are serving requests "
                f"({', '.join(busy)}); retry shortly",
                retry_after=5,
            )
        idle.sort(key=self._last_used)
        victims = idle[:excess]
        for victim in victims:  # reserved now, so that no other load picks them too
            victim.unloading = asyncio.get_running_loop().create_future()
        return victims

    # -- unloading -------------------------------------------------------------------------------

    async def unload(self, name: str) -> bool:
        """Unload ``name``'s model now; False if it was not loaded. Raises ``ModelBusyError``
        (409) while it has requests in flight. A load in progress finishes first."""
        managed = self._managed(name)
        if managed.loading is not None:
            await asyncio.gather(asyncio.shield(managed.loading), return_exceptions=True)
        if managed.unloading is not None:
            await asyncio.shield(managed.unloading)
            return False
        if not managed.backend.loaded:
            return False
        if not self._idle(managed):
            raise ModelBusyError(
                f"model '{managed.route.name}' is serving {self.in_flight(name)} request(s); "
                "unload it when they have finished"
            )
        managed.unloading = asyncio.get_running_loop().create_future()
        await self._unload(managed)
        return True

    async def _unload(self, managed: _Managed) -> None:
        """Unload a model whose ``unloading`` is already set (reserved), then clear it."""
        reserved = managed.unloading
        try:
            await managed.backend.unload()
        finally:
            managed.unloading = None
            managed.loaded_at = None
            managed.keep_alive_set = False
            managed.keep_alive = None
            if reserved is not None and not reserved.done():
                reserved.set_result(None)
        log.info("unloaded model %s", managed.route.name)

    def set_keep_alive(self, name: str, seconds: float | None) -> None:
        """This request's ``keep_alive`` (Ollama): how long ``name``'s model stays loaded once
        idle (None: keep it loaded), until the next request on it or an unload. Upstream
        models are not affected (an Ollama upstream has its entry's keep_alive)."""
        managed = self._managed(name)
        if managed.in_process:
            managed.keep_alive, managed.keep_alive_set = seconds, True
            request_models.keep_alive_set(managed.route.name)

    async def reap(self) -> list[str]:
        """Unload every idle in-process model whose idle time is up; returns their names."""
        now = self._clock()
        for managed in self._models.values():
            if managed.backend.loaded and managed.loaded_at is None:  # loaded elsewhere
                managed.loaded_at = now
        due = [
            m
            for m in self._models.values()
            if m.in_process
            and m.ttl is not None
            and m.backend.loaded
            and m.loading is None
            and m.unloading is None
            and self._idle(m)
            and now - self._last_used(m) >= m.ttl
        ]
        for managed in due:
            managed.unloading = asyncio.get_running_loop().create_future()
        unloaded = []
        for managed in due:
            log.info("model %s idle for %.0fs: unloading", managed.route.name, managed.ttl)
            try:
                await self._unload(managed)
            except Exception:
                log.exception("unloading idle model %s failed", managed.route.name)
                continue
            unloaded.append(managed.route.name)
        return unloaded

    @asynccontextmanager
    async def running(self, interval: float = REAP_INTERVAL) -> AsyncIterator[None]:
        """Run the idle check every ``interval`` seconds while the block runs."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.reap()
                except Exception:
                    log.exception("the idle-model check failed")

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- helpers ---------------------------------------------------------------------------------

    def _managed(self, name: str) -> _Managed:
        managed = self._by_name.get(name)
        if managed is None:
            raise KeyError(f"model '{name}' is not managed here")
        return managed

    def _idle(self, managed: _Managed) -> bool:
        return managed.leases == 0 and not any(self._activity.in_flight(n) for n in managed.names)

    def _last_used(self, managed: _Managed) -> float:
        times = [self._activity.last_used(n) for n in managed.names]
        known = [t for t in [*times, managed.loaded_at] if t is not None]
        return max(known) if known else float("-inf")


class _Lease:
    """``ModelLifecycle.lease`` of a managed model (a class: this runs once per request)."""

    __slots__ = ("_lifecycle", "_managed")

    def __init__(self, lifecycle: ModelLifecycle, managed: _Managed) -> None:
        self._lifecycle = lifecycle
        self._managed = managed

    async def __aenter__(self) -> None:
        managed = self._managed
        if managed.keep_alive_set and managed.route.name not in request_models.kept_alive():
            managed.keep_alive_set, managed.keep_alive = False, None  # the last request's
        managed.leases += 1
        try:
            before = time.monotonic_ns()
            was_loaded = managed.backend.loaded
            await self._lifecycle._ensure_loaded(managed)
            request_models.set_load_wait(0 if was_loaded else time.monotonic_ns() - before)
        except BaseException:
            managed.leases -= 1
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._managed.leases -= 1


def _retrieved(task: asyncio.Task[None]) -> None:
    """Every waiter may have gone (clients disconnected): the failure is still logged."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("model load failed: %s", task.exception())
