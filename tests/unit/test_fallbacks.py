"""`fallbacks:`: the next model serves when one is unavailable or overloaded before the first
byte; a client error is never retried elsewhere; headers say who served."""

from __future__ import annotations

import json

import pytest

from backends.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    QueueFullError,
    UpstreamError,
)
from tests.fakes import FakeScript
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

MODELS = [
    fake_entry("primary", ["p"], fallbacks=["second", "third"]),
    fake_entry("second"),
    fake_entry("third"),
]
BODY = {"model": "p", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "error",
    [BackendUnavailableError("down"), QueueFullError("busy"), UpstreamError("500 upstream")],
)
async def test_fallback_serves_when_primary_fails_before_first_byte(app_client, stream, error):
    scripts = {"primary": FakeScript(fail_before_first=error)}
    async with app_client(models=MODELS, scripts=scripts) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json={**BODY, "stream": stream})
    assert reply.status_code == 200
    assert reply.headers["x-llmgate-model"] == "second"
    assert len(fakes["second"].requests) == 1
    if not stream:
        assert reply.json()["model"] == "p"  # still what the client asked


async def test_chain_continues_past_a_failing_fallback(app_client):
    scripts = {
        "primary": FakeScript(fail_before_first=BackendUnavailableError("down")),
        "second": FakeScript(fail_before_first=QueueFullError("busy")),
    }
    async with app_client(models=MODELS, scripts=scripts) as (client, _):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.headers["x-llmgate-model"] == "third"


async def test_all_failing_returns_the_last_error(app_client):
    down = FakeScript(fail_before_first=BackendUnavailableError("down", retry_after=3))
    scripts = {"primary": down, "second": down, "third": down}
    async with app_client(models=MODELS, scripts=scripts) as (client, _):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "3"


async def test_client_errors_do_not_fall_back(app_client):
    scripts = {"primary": FakeScript(fail_before_first=InvalidRequestError("bad", param="x"))}
    async with app_client(models=MODELS, scripts=scripts) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.status_code == 400
    assert fakes["second"].requests == []


async def test_failure_after_first_byte_is_an_error_frame_not_a_fallback(app_client):
    scripts = {"primary": FakeScript(fail_after_tokens=1, fail_with=UpstreamError("died"))}
    async with app_client(models=MODELS, scripts=scripts) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
    frames = [f[6:] for f in reply.text.split("\n\n") if f]
    assert json.loads(frames[-2])["error"]["code"] == "upstream_error"
    assert frames[-1] == "[DONE]"
    assert fakes["second"].requests == []
    assert reply.headers["x-llmgate-model"] == "primary"
