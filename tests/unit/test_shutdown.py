"""The shutdown drain through the real app (no sockets, no sleeps: the test calls
``Drain.expire`` where the timer would): answers that finish in time are untouched; at the
deadline a stream ends in its surface's error format, an answer not started is a 503; while
draining new requests are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.registry import BackendSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.shutdown import Drain
from tests.fakes import FakeLoadingBackend
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

CHAT = [{"role": "user", "content": "hi"}]
SHUTTING_DOWN = "the server is shutting down; retry on another instance"


@asynccontextmanager
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FakeLoadingBackend, Drain]]:
    fakes: dict[str, FakeLoadingBackend] = {}

    def build(settings: BackendSettings, _base_dir: Path | None) -> FakeLoadingBackend:
        fakes[settings.name] = FakeLoadingBackend(settings.name)
        return fakes[settings.name]

    app = create_app(GatewayConfig(models=[fake_entry("alpha")]), backend_factory=build)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, fakes["alpha"], app.state.drain


async def cut_off(path: str, body: dict[str, Any]) -> httpx.Response:
    """``body`` sent to ``path``; the backend holds after its first token; the drain expires."""
    async with served() as (client, fake, drain):
        fake.hold = asyncio.Event()
        request = asyncio.create_task(client.post(path, json=body))
        await fake.holding.wait()
        drain.begin(3600)
        drain.expire()
        reply = await request
    assert fake.streams_closed == 1  # the backend's work was stopped
    return reply


async def test_a_stream_cut_off_ends_with_an_error_frame_then_done():
    body = {"model": "alpha", "messages": CHAT, "stream": True}
    reply = await cut_off("/v1/chat/completions", body)
    frames = [f.removeprefix("data: ") for f in reply.text.split("\n\n") if f]
    assert reply.status_code == 200
    assert json.loads(frames[1])["choices"][0]["delta"]["content"] == "Hello"
    assert json.loads(frames[-2])["error"]["code"] == "server_shutting_down"
    assert frames[-1] == "[DONE]"


async def test_a_completions_stream_cut_off_ends_the_same_way():
    body = {"model": "alpha", "prompt": "x", "stream": True}
    reply = await cut_off("/v1/completions", body)
    frames = [f.removeprefix("data: ") for f in reply.text.split("\n\n") if f]
    assert json.loads(frames[-2])["error"]["message"] == SHUTTING_DOWN
    assert frames[-1] == "[DONE]"


async def test_an_ollama_stream_cut_off_ends_with_an_error_line():
    body = {"model": "alpha", "messages": CHAT}
    reply = await cut_off("/api/chat", body)
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert lines[0]["message"]["content"] == "Hello"
    assert lines[-1] == {"error": SHUTTING_DOWN}


async def test_an_anthropic_stream_cut_off_ends_with_an_error_event():
    body = {"model": "alpha", "messages": CHAT, "max_tokens": 10, "stream": True}
    reply = await cut_off("/v1/messages", body)
    last = reply.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("data: ", 1)[1])["error"]["message"] == SHUTTING_DOWN


async def test_a_responses_stream_cut_off_ends_with_its_failure_event():
    body = {"model": "alpha", "input": "hi", "stream": True}
    reply = await cut_off("/v1/responses", body)
    events = [e.split("\n")[0] for e in reply.text.strip().split("\n\n")]
    assert events[-1] == "event: response.failed"
    assert SHUTTING_DOWN in reply.text


async def test_an_answer_still_running_at_the_deadline_is_a_503():
    reply = await cut_off("/v1/chat/completions", {"model": "alpha", "messages": CHAT})
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "server_shutting_down"


async def test_a_request_waiting_for_its_model_to_load_is_a_503_at_the_deadline():
    async with served() as (client, fake, drain):
        await fake.unload()
        fake.load_gate = asyncio.Event()
        request = asyncio.create_task(client.post("/api/generate", json={"model": "alpha"}))
        await asyncio.wait_for(_until_loading(fake), 5)
        drain.expire()
        reply = await request
    assert reply.status_code == 503
    assert reply.json() == {"error": SHUTTING_DOWN}  # in Ollama's envelope


async def _until_loading(fake: FakeLoadingBackend) -> None:
    while not fake.loads:
        await asyncio.sleep(0)


async def test_an_answer_that_finishes_within_the_drain_is_untouched():
    async with served() as (client, fake, drain):
        fake.hold = asyncio.Event()
        body = {"model": "alpha", "messages": CHAT, "stream": True}
        request = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await fake.holding.wait()
        drain.begin(3600)
        fake.hold.set()
        reply = await request
    assert reply.text.endswith("data: [DONE]\n\n")
    assert "error" not in reply.text


async def test_requests_arriving_while_draining_are_refused():
    async with served() as (client, _, drain):
        drain.begin(3600)
        chat = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": CHAT})
        health = await client.get("/health")
    assert chat.status_code == health.status_code == 503
    assert chat.json()["error"]["code"] == "server_shutting_down"


async def test_begin_schedules_the_expiry_after_the_drain_time():
    drain = Drain()
    timer = drain.begin(12.5)
    assert timer is not None and drain.draining and not drain.expired
    loop = asyncio.get_running_loop()
    assert timer.when() - loop.time() == pytest.approx(12.5, abs=1)
    assert drain.begin(1) is None  # once
    timer.cancel()
