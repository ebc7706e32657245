"""In-process app fixtures: the real app, FakeBackends, httpx over ASGI (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.fakes import FakeBackend, FakeScript, fake_factory


def fake_entry(name: str, aliases: list[str] | None = None, **extra: object) -> LlamaCppSettings:
    return LlamaCppSettings(
        name=name, aliases=aliases or [], backend="llama_cpp", source="unused.gguf", **extra
    )


AppClient = Callable[
    ..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, dict[str, FakeBackend]]]
]


@pytest.fixture
def app_client() -> AppClient:
    """``async with app_client(scripts=..., api_keys=...) as (client, fakes)``."""

    @asynccontextmanager
    async def make(
        scripts: dict[str, FakeScript] | None = None,
        api_keys: list | None = None,
        models: list[LlamaCppSettings] | None = None,
        **server: Any,
    ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeBackend]]]:
        fakes: dict[str, FakeBackend] = {}
        config = GatewayConfig(
            server=ServerSettings(api_keys=api_keys or [], **server),
            models=models or [fake_entry("alpha", ["default", "a"]), fake_entry("beta")],
        )
        app = create_app(config, backend_factory=fake_factory(scripts, fakes))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, fakes

    return make
