"""The admin routes (``/admin/*``) and the wiring of model lifecycle and graceful shutdown.

- ``GET /admin/models``: each model's state, requests in flight, idle time and idle timeout.
- ``POST /admin/models/{name}/load``: load it (a name or an alias; a LoRA variant loads its
  base model); 503 ``backend_unavailable`` with the reason when it cannot be loaded.
- ``POST /admin/models/{name}/unload``: unload it now; 409 ``model_busy`` while it has
  requests in flight (nothing waits: retry when they have finished).

Unknown names are 404. When API keys are configured these routes need a key (401) with
``admin: true`` (else 403 ``permission_denied``); with no keys configured, like every route,
they are open — bind the server to a private address then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from backends.errors import PermissionDeniedError
from gateway.api import RouterDep
from gateway.config import GatewayConfig
from gateway.lifecycle import ModelLifecycle
from gateway.routing import ModelRouter
from gateway.shutdown import Drain

admin_api = APIRouter()


def _lifecycle(request: Request) -> ModelLifecycle:
    if getattr(request.state, "admin", None) is False:  # a key was needed and is not admin
        raise PermissionDeniedError(
            "this API key may not use the admin routes (give it admin: true)",
            code="permission_denied",
        )
    lifecycle: ModelLifecycle = request.app.state.lifecycle
    return lifecycle


def _public_name(router: ModelRouter, name: str) -> str:
    return router.resolve(name, None).model  # 404 for an unknown name


def _status(lifecycle: ModelLifecycle, name: str) -> dict[str, Any]:
    state, detail = lifecycle.state(name)
    body: dict[str, Any] = {"model": name, "state": state}
    if detail is not None:
        body["error"] = detail
    return body


@admin_api.get("/admin/models")
async def list_models(request: Request, router: RouterDep) -> JSONResponse:
    lifecycle = _lifecycle(request)
    models = []
    for route in router.routes:
        idle = lifecycle.idle_seconds(route.name)
        models.append(
            {
                **_status(lifecycle, route.name),
                "parent": route.parent,
                "in_flight": lifecycle.in_flight(route.name),
                "idle_seconds": None if idle is None else round(idle, 3),
                "idle_unload_after": lifecycle.ttl(route.name),
            }
        )
    return JSONResponse({"models": models})


@admin_api.post("/admin/models/{name:path}/load")
async def load_model(name: str, request: Request, router: RouterDep) -> JSONResponse:
    lifecycle = _lifecycle(request)
    public = _public_name(router, name)
    await lifecycle.load(public)
    return JSONResponse(_status(lifecycle, public))


@admin_api.post("/admin/models/{name:path}/unload")
async def unload_model(name: str, request: Request, router: RouterDep) -> JSONResponse:
    lifecycle = _lifecycle(request)
    public = _public_name(router, name)
    await lifecycle.unload(public)
    return JSONResponse(_status(lifecycle, public))


def install_lifecycle(app: FastAPI, config: GatewayConfig) -> None:
    """The admin routes and the drain (``app.state.drain``, started by the CLI's server on
    SIGTERM; ``RequestMiddleware`` tracks each request in it and makes the lifecycle the
    request's)."""
    app.state.drain = Drain()
    app.include_router(admin_api)


@asynccontextmanager
async def running_lifecycle(
    app: FastAPI, router: ModelRouter, config: GatewayConfig
) -> AsyncIterator[ModelLifecycle]:
    """In the lifespan, after the preloads: the lifecycle on ``app.state.lifecycle`` and its
    idle check running until the block ends."""
    lifecycle = ModelLifecycle.of(router, config.models, config.server.max_loaded_models)
    app.state.lifecycle = lifecycle
    async with lifecycle.running():
        yield lifecycle
