"""create_app(config) -> the FastAPI application. Everything runtime lives on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backends.registry import create_backend
from gateway.admin_api import install_lifecycle, running_lifecycle
from gateway.anthropic_api import anthropic_api
from gateway.api import api
from gateway.config import GatewayConfig
from gateway.cors import install_cors
from gateway.embeddings_api import embeddings_api
from gateway.errors import install_exception_handlers
from gateway.limits import RequestLimits
from gateway.metered_backend import BackendActivity
from gateway.metrics import install_metrics
from gateway.middleware import RequestMiddleware
from gateway.ollama_api import ollama_api
from gateway.rate_limits import install_rate_limits
from gateway.request_log import install_request_log
from gateway.request_record import RecordObserver
from gateway.responses_api import responses_api
from gateway.routing import BackendFactory, ModelRouter
from gateway.webchat import install_chat_page


def create_app(config: GatewayConfig, backend_factory: BackendFactory | None = None) -> FastAPI:
    """Build the app; its lifespan builds the router, preloads models and closes them.

    ``backend_factory`` replaces the engine registry (tests pass fakes here).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        factory = backend_factory or create_backend
        router = ModelRouter.from_settings(config.models, config.base_dir, factory, activity)
        app.state.router = router
        try:
            await router.start()
            async with running_lifecycle(app, router, config):  # idle unloads, the budget
                yield
        finally:
            await router.aclose()

    app = FastAPI(
        title="llmgate",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.config = config
    activity = BackendActivity()
    # Observers of each finished request (metrics, the request log, token budgets) append here.
    observers: list[RecordObserver] = []
    app.state.record_observers = observers
    install_exception_handlers(app)
    app.include_router(api)
    app.include_router(embeddings_api)
    app.include_router(responses_api)
    app.include_router(anthropic_api)
    app.include_router(ollama_api)
    install_chat_page(app)
    install_metrics(app, config)  # GET /metrics and its record observer
    install_request_log(app, config)  # one line per request on llmgate.requests
    install_lifecycle(app, config)  # /admin/models, the drain (app.state.drain)
    limiter = install_rate_limits(app, config)  # per key / per model limits
    # One layer around the handlers for every per-request concern: the request record (id,
    # status, timings), body size and the request's clock, the key, its rate limits,
    # disconnect watching, the drain and the model lifecycle (gateway/middleware.py).
    app.add_middleware(
        RequestMiddleware,
        observers=observers,
        activity=activity,
        limits=RequestLimits.from_config(config),
        keys=config.server.api_key_entries(),
        limiter=limiter,
        drain=app.state.drain,
    )
    install_cors(app, config)  # outermost: preflights answered before the key is checked
    return app
