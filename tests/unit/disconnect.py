"""Drive the app over raw ASGI and disconnect mid-request, as a client that goes away does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fakes import FakeBackend, FakeScript, fake_factory
from tests.unit.conftest import fake_entry


async def call_then_disconnect(
    body: dict[str, Any], disconnect_after: float = 0.0, path: str = "/v1/chat/completions"
) -> tuple[FakeBackend, int, list[dict[str, Any]]]:
    """POST ``body`` to ``path`` of an app whose model ``alpha`` streams 1,000 slow tokens;
    disconnect ``disconnect_after`` seconds after generation starts. Returns the fake backend,
    the tokens it had generated when the handler returned, and the ASGI messages sent."""
    fakes: dict[str, FakeBackend] = {}
    slow = FakeScript(tokens=["t"] * 1000, delay=0.01)
    app = create_app(
        GatewayConfig(models=[fake_entry("alpha")]),
        backend_factory=fake_factory({"alpha": slow}, fakes),
    )
    sent: list[dict[str, Any]] = []
    disconnect = asyncio.Event()
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    async with app.router.lifespan_context(app):
        call = asyncio.create_task(app(scope, receive, send))
        # disconnect once generation runs (a loaded machine may take a while to start it)
        for _ in range(500):
            if "alpha" in fakes and fakes["alpha"].tokens_generated > 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(disconnect_after)
        disconnect.set()
        await asyncio.wait_for(call, 2)
        fake = fakes["alpha"]
        at_return = fake.tokens_generated
        await asyncio.sleep(0.1)
        return fake, at_return, sent
