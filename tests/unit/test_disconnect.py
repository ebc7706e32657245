"""A client that goes away stops its generation: the ASGI disconnect cancels the handler
(non-streaming) or closes the stream (streaming), and the engine sees the close."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fakes import FakeBackend, FakeScript, fake_factory
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio


async def call_then_disconnect(body: dict, disconnect_after: float):
    fakes: dict[str, FakeBackend] = {}
    slow = FakeScript(tokens=["t"] * 1000, delay=0.01)
    app = create_app(
        GatewayConfig(models=[fake_entry("alpha")]),
        backend_factory=fake_factory({"alpha": slow}, fakes),
    )
    sent: list[dict] = []
    disconnect = asyncio.Event()
    request_sent = False

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
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


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_stops_generation(stream):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    fake, at_return, sent = await call_then_disconnect(body, 0.15)
    assert 0 < at_return < 100  # it was generating, and stopped long before 1000 tokens
    assert fake.tokens_generated == at_return  # nothing more after the disconnect
    assert fake.streams_closed == 1
    if not stream:
        assert not any(m["type"] == "http.response.start" for m in sent)
