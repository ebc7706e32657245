"""Rate limits through the real app on a fake clock: per key (rpm, tpm, max_parallel) and per
model, the 429 with Retry-After and the x-ratelimit-* headers on every surface, the record's
error type, and the store-down policy (open or closed, logged once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from backends.errors import RateLimitError
from gateway.app import create_app
from gateway.config import ApiKey, GatewayConfig, ModelLimits, ServerSettings
from gateway.limit_store import RedisLimitStore
from gateway.request_record import RequestRecord
from tests.fake_upstreams import closed_port
from tests.fakes import FakeBackend, FakeScript, fake_factory
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
TOKENS_PER_CHAT = 7 + 4  # FakeScript: 7 prompt tokens, four completion tokens


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def limited_app(
    keys: list[ApiKey],
    model_limits: dict[str, ModelLimits] | None = None,
    scripts: dict[str, FakeScript] | None = None,
    **server: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeClock, list[RequestRecord]]]:
    config = GatewayConfig(
        server=ServerSettings(api_keys=keys, model_limits=model_limits or {}, **server),
        models=[fake_entry("alpha", ["a"], fallbacks=["beta"]), fake_entry("beta")],
    )
    fakes: dict[str, FakeBackend] = {}
    app = create_app(config, backend_factory=fake_factory(scripts, fakes))
    clock = FakeClock()
    app.state.rate_limiter.clock = clock
    records: list[RequestRecord] = []
    app.state.record_observers.append(records.append)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, clock, records


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_the_request_after_rpm_is_a_429_with_retry_after_and_headers():
    async with limited_app([ApiKey(key="k1", rpm=2)]) as (client, _clock, records):
        first = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        second = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        third = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["retry-after"] == "30"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"] == "1m0s"
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "2 requests per minute" in error["message"]
    assert records[-1].error_type == "rate_limit_exceeded" and records[-1].status == 429
    assert "tokens" not in str(first.headers)  # no tpm, no token headers


async def test_the_budget_refills_with_the_clock():
    async with limited_app([ApiKey(key="k1", rpm=2)]) as (client, clock, _):
        for _ in range(2):
            await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        clock.now += 29.9
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        ).status_code == 429
        clock.now += 0.1
        again = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining-requests"] == "0"


async def test_keys_have_budgets_of_their_own_and_unlimited_keys_get_no_headers():
    keys = [ApiKey(key="k1", rpm=1), ApiKey(key="k2", rpm=1), ApiKey(key="free")]
    async with limited_app(keys) as (client, _, _):
        statuses = [
            (await client.post("/v1/chat/completions", json=CHAT, headers=auth(k))).status_code
            for k in ("k1", "k2", "k1", "k2")
        ]
        free = await client.post("/v1/chat/completions", json=CHAT, headers=auth("free"))
    assert statuses == [200, 200, 429, 429]
    assert free.status_code == 200 and "x-ratelimit-limit-requests" not in free.headers


async def test_tpm_charges_the_actual_tokens_after_the_request_and_refuses_once_spent():
    async with limited_app([ApiKey(key="k1", tpm=20)]) as (client, clock, _):
        first = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        second = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        third = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        # two requests spent 22 tokens of 20: the debt of 2 and one token take 9 s to repay
        clock.now += 8.9
        early = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        clock.now += 0.1
        later = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"  # checked, not yet charged
    assert second.headers["x-ratelimit-remaining-tokens"] == str(20 - TOKENS_PER_CHAT)
    assert third.status_code == 429 and third.headers["retry-after"] == "9"
    assert "20 tokens per minute" in third.json()["error"]["message"]
    assert (early.status_code, later.status_code) == (429, 200)


async def test_max_parallel_refuses_a_request_beyond_the_slots_and_frees_them_after():
    slow = {"alpha": FakeScript(delay=0.05)}
    async with limited_app([ApiKey(key="k1", max_parallel=1)], scripts=slow) as (client, _, _):
        held = asyncio.create_task(
            client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        )
        await asyncio.sleep(0.02)  # the first request is generating
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
        assert (await held).status_code == 200
        after = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "max_parallel 1" in refused.json()["error"]["message"]
    assert after.status_code == 200


async def test_reading_the_model_list_is_not_counted():
    async with limited_app([ApiKey(key="k1", rpm=1)]) as (client, _, _):
        for _ in range(3):
            assert (await client.get("/v1/models", headers=auth("k1"))).status_code == 200
        reply = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert reply.status_code == 200


async def test_a_spent_model_falls_back_then_answers_429_without_fallback():
    limits = {"a": ModelLimits(rpm=1), "beta": ModelLimits(rpm=1)}  # by alias or name
    async with limited_app([], model_limits=limits) as (client, _, records):
        served = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 429]
    assert [r.headers.get("x-llmgate-model") for r in served[:2]] == ["alpha", "beta"]
    assert served[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert "model 'beta'" in served[2].json()["error"]["message"]
    assert served[2].headers["x-ratelimit-limit-requests"] == "1"
    assert records[2].error_type == "rate_limit_exceeded"


async def test_model_tokens_are_charged_to_the_model_that_served():
    async with limited_app([], model_limits={"beta": ModelLimits(tpm=5)}) as (client, _, _):
        body = {**CHAT, "model": "beta"}
        first = await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json=body)
        other = await client.post("/v1/chat/completions", json=CHAT)
    assert (first.status_code, second.status_code, other.status_code) == (200, 429, 200)
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_the_tighter_of_key_and_model_budgets_is_shown():
    keys = [ApiKey(key="k1", rpm=10)]
    async with limited_app(keys, model_limits={"alpha": ModelLimits(rpm=3)}) as (client, _, _):
        reply = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
    assert reply.headers["x-ratelimit-limit-requests"] == "3"
    assert reply.headers["x-ratelimit-remaining-requests"] == "2"


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/api/chat", {"model": "alpha", "messages": CHAT["messages"], "stream": False}, "ollama"),
        (
            "/v1/messages",
            {"model": "alpha", "max_tokens": 5, "messages": CHAT["messages"]},
            "anthropic",
        ),
        ("/v1/completions", {"model": "alpha", "prompt": "hi"}, "openai"),
    ],
)
async def test_a_429_has_the_error_shape_of_the_surface(path, body, shape):
    async with limited_app([ApiKey(key="k1", rpm=1)]) as (client, _, _):
        assert (await client.post(path, json=body, headers=auth("k1"))).status_code == 200
        refused = await client.post(path, json=body, headers=auth("k1"))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    error = refused.json()
    if shape == "ollama":
        assert "rate limit exceeded" in error["error"]
    elif shape == "anthropic":
        assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    else:
        assert error["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
async def test_an_unreachable_store_follows_the_policy_logged_once(policy, status, caplog):
    keys = [ApiKey(key="k1", rpm=1, tpm=100)]
    async with limited_app(keys, rate_limit_failure=policy) as (client, _, records):
        limiter = client._transport.app.state.rate_limiter  # type: ignore[attr-defined]
        await limiter.store.aclose()
        limiter.store = RedisLimitStore(f"redis://127.0.0.1:{closed_port()}/0")
        with caplog.at_level(logging.WARNING, logger="gateway.rate_limits"):
            replies = [
                await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
                for _ in range(3)
            ]
    assert [r.status_code for r in replies] == [status] * 3
    outage = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage) == 1 and f"failing {policy}" in outage[0].getMessage()
    if policy == "closed":
        error = replies[0].json()["error"]
        assert error["code"] == "rate_limit_unavailable" and replies[0].headers["retry-after"]
        assert records[0].error_type == "rate_limit_unavailable"
    else:
        assert "x-ratelimit-limit-requests" not in replies[0].headers


async def test_a_store_that_answers_again_is_logged_once_and_enforces_again(caplog):
    async with limited_app([ApiKey(key="k1", rpm=1)]) as (client, _, _):
        limiter = client._transport.app.state.rate_limiter  # type: ignore[attr-defined]
        working = limiter.store
        limiter.store = RedisLimitStore(f"redis://127.0.0.1:{closed_port()}/0")
        with caplog.at_level(logging.WARNING, logger="gateway.rate_limits"):
            down = await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
            await limiter.store.aclose()
            limiter.store = working
            up = [
                await client.post("/v1/chat/completions", json=CHAT, headers=auth("k1"))
                for _ in range(2)
            ]
    assert (down.status_code, [r.status_code for r in up]) == (200, [200, 429])
    messages = [r.getMessage() for r in caplog.records]
    assert sum("answers again" in m for m in messages) == 1


async def test_the_model_proxy_keeps_the_backends_protocols_and_gates_the_relay():
    from backends.openai_types import ChatCompletionRequest
    from backends.protocol import Embedder, OpenAIRelay
    from gateway.limit_store import MemoryLimitStore
    from gateway.rate_limits import Admission, ModelLimitedBackend, RateLimiter
    from tests.fakes import FakeEmbedder, FakeRelay

    limiter = RateLimiter([], {"r": ModelLimits(rpm=1)}, MemoryLimitStore(), clock=FakeClock())
    relay = ModelLimitedBackend(FakeRelay("r"), Admission(limiter, None))
    assert isinstance(relay, OpenAIRelay) and relay.model == "r"
    assert isinstance(ModelLimitedBackend(FakeEmbedder("e"), Admission(limiter, None)), Embedder)
    body = ChatCompletionRequest.model_validate(CHAT)
    await relay.relay("chat/completions", body)
    await relay.relay("chat/completions", body)  # the same request: admitted once
    again = ModelLimitedBackend(FakeRelay("r"), Admission(limiter, None))
    with pytest.raises(RateLimitError) as refused:
        await again.relay("chat/completions", body)
    assert refused.value.retry_after == 60.0
