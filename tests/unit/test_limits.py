"""Request limits (gateway/limits.py): body size 413, messages 400, the per-model max_tokens
cap (clamp or 400), the request deadline (504 before headers, an error frame after). The
deadline tests use sub-second timeouts on a fake engine that would otherwise wait half a
minute per token: no test waits for time to pass on purpose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest

from backends.errors import DeadlineExceededError, InvalidRequestError
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.limits import (
    ModelLimits,
    RequestBudget,
    RequestLimits,
    capped_tokens,
    check_messages,
)
from tests.fakes import FakeBackend, FakeRelay, FakeScript, fake_factory
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def limited_app(
    server: ServerSettings | None = None,
    scripts: dict[str, FakeScript] | None = None,
    relay: bool = False,
    **entry: object,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeBackend]]]:
    fakes: dict[str, FakeBackend] = {}
    config = GatewayConfig(
        server=server or ServerSettings(), models=[fake_entry("alpha", **entry), fake_entry("b")]
    )
    factory = fake_factory(scripts, fakes)
    if relay:

        def factory(settings, _base_dir):  # type: ignore[no-untyped-def]
            fakes[settings.name] = FakeRelay(settings.name)
            return fakes[settings.name]

    app = create_app(config, backend_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, fakes


# -- pure rules -------------------------------------------------------------------------------


def test_messages_over_the_limit_is_a_400_naming_messages():
    check_messages(3, 3)
    check_messages(10_000, None)
    with pytest.raises(InvalidRequestError) as caught:
        check_messages(4, 3)
    assert caught.value.param == "messages" and caught.value.status == 400


@pytest.mark.parametrize(
    ("requested", "limits", "expected"),
    [
        (None, ModelLimits(), None),
        (500, ModelLimits(), 500),
        (None, ModelLimits(max_tokens_cap=64), 64),
        (32, ModelLimits(max_tokens_cap=64), 32),
        (64, ModelLimits(max_tokens_cap=64, max_tokens_policy="reject"), 64),
        (500, ModelLimits(max_tokens_cap=64), 64),
    ],
)
def test_max_tokens_under_the_cap(requested, limits, expected):
    assert capped_tokens(requested, "m", limits) == expected


def test_max_tokens_over_the_cap_with_reject_is_a_400_naming_max_tokens():
    with pytest.raises(InvalidRequestError) as caught:
        capped_tokens(65, "m", ModelLimits(max_tokens_cap=64, max_tokens_policy="reject"))
    assert caught.value.param == "max_tokens" and "at most 64" in caught.value.message


def test_the_deadline_error_is_a_504_that_no_fallback_retries():
    from backends.errors import may_retry

    error = DeadlineExceededError("late")
    assert error.status == 504 and error.code == "backend_timeout" and not may_retry(error)


# -- body size --------------------------------------------------------------------------------


async def test_a_body_over_max_body_bytes_is_a_413_in_the_openai_shape():
    async with limited_app(ServerSettings(max_body_bytes=2048)) as (client, fakes):
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
        response = await client.post("/v1/chat/completions", json=big)
        ok = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "server.max_body_bytes" in response.json()["error"]["message"]
    assert ok.status_code == 200
    assert len(fakes["alpha"].requests) == 1  # the large one never reached the backend


async def test_a_chunked_body_without_content_length_is_counted_as_it_arrives():
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    async with limited_app(ServerSettings(max_body_bytes=2048)) as (client, _):
        response = await client.post(
            "/api/chat", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]  # Ollama's shape: {"error": "..."}


async def test_a_chunked_body_under_the_limit_is_replayed_whole():
    body = json.dumps(CHAT).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    async with limited_app(ServerSettings(max_body_bytes=2048)) as (client, _):
        response = await client.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text


# -- messages and max_tokens, on every surface --------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/api/chat", {**CHAT, "stream": False}),
        ("/v1/messages", {**CHAT, "max_tokens": 10}),
        ("/v1/responses", {"model": "alpha", "input": [{"role": "user", "content": "hi"}]}),
    ],
)
async def test_too_many_messages_is_a_400_naming_messages_on_every_surface(path, body):
    many = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "hi"},
    ]
    body = {**body, "input" if "input" in body else "messages": many}
    async with limited_app(ServerSettings(max_messages=2)) as (client, fakes):
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert "too many messages" in response.text and "max_messages" in response.text
    if path == "/v1/chat/completions":
        assert response.json()["error"]["param"] == "messages"
    assert fakes["alpha"].requests == []


async def test_max_tokens_is_clamped_to_the_models_cap():
    async with limited_app(max_tokens_cap=2) as (client, fakes):
        clamped = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 50})
        unset = await client.post("/api/generate", json={"model": "alpha", "prompt": "hi"})
        other = await client.post("/v1/chat/completions", json={**CHAT, "model": "b"})
    assert clamped.status_code == 200 and unset.status_code == 200 and other.status_code == 200
    assert clamped.json()["choices"][0]["finish_reason"] == "length"
    assert [r.max_tokens for r in fakes["alpha"].requests] == [2, 2]
    assert fakes["b"].requests[0].max_tokens is None  # another model: no cap


async def test_max_tokens_over_the_cap_is_a_400_with_reject():
    async with limited_app(max_tokens_cap=2, max_tokens_policy="reject") as (client, fakes):
        response = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3})
        anthropic = await client.post("/v1/messages", json={**CHAT, "max_tokens": 3})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert anthropic.status_code == 400 and anthropic.json()["type"] == "error"
    assert fakes["alpha"].requests == []


async def test_a_relayed_request_is_clamped_as_sent():
    async with limited_app(relay=True, max_tokens_cap=8) as (client, fakes):
        await client.post("/v1/chat/completions", json={**CHAT, "max_completion_tokens": 99})
        await client.post("/v1/chat/completions", json=CHAT)
    relay = fakes["alpha"]
    assert isinstance(relay, FakeRelay)
    assert relay.relayed[0][1]["max_completion_tokens"] == 8
    assert relay.relayed[1][1]["max_tokens"] == 8


# -- the deadline -------------------------------------------------------------------------


SLOW = FakeScript(delay=30.0)  # half a minute per token: only the deadline ends it


async def test_a_request_past_its_deadline_is_a_504_and_its_stream_is_closed():
    server = ServerSettings(request_timeout=0.05)
    async with limited_app(server, scripts={"alpha": replace(SLOW)}) as (client, fakes):
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "backend_timeout"
    assert "request_timeout" in response.json()["error"]["message"]
    assert fakes["alpha"].streams_closed == 1 and fakes["alpha"].tokens_generated == 0


async def test_a_stream_past_its_deadline_ends_with_an_error_frame():
    async with limited_app(scripts={"alpha": replace(SLOW)}, request_timeout=0.05) as (
        client,
        fakes,
    ):
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200  # the first chunk had gone out
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    assert json.loads(frames[-2].removeprefix("data: "))["error"]["code"] == "backend_timeout"
    assert fakes["alpha"].streams_closed == 1


def test_the_models_own_timeout_wins_over_the_servers_and_applies_only_to_it():
    limits = RequestLimits(
        request_timeout=30.0,
        models={"alpha": ModelLimits(request_timeout=2.0), "b": ModelLimits()},
    )
    budget = RequestBudget(limits, started=100.0)
    assert budget.deadline("alpha") == 102.0
    assert budget.deadline("b") == 130.0
    assert RequestBudget(RequestLimits(), 100.0).deadline("alpha") is None
