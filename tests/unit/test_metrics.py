"""/metrics over ASGI: request metrics from the finished records (names, labels, values,
histograms), bounded labels, model and engine state read at scrape time, one registry per app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.errors import BackendTimeoutError, QueueFullError
from backends.local.engine import EngineStats
from backends.upstream.replicas import ReplicaPool
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.metrics import MODEL_STATES, ModelStateCollector
from gateway.routing import ModelRouter
from tests.fakes import FakeBackend, FakeScript, fake_factory
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, label: str) -> set[str]:
    return {dict(labels)[label] for _, labels in samples if label in dict(labels)}


async def scrape(client: httpx.AsyncClient) -> Samples:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(reply.text)


async def test_requests_are_counted_by_model_surface_and_status(app_client):
    async with app_client(api_keys=["k"]) as (client, _):
        key = {"Authorization": "Bearer k"}
        await client.post("/v1/chat/completions", json={**CHAT, "model": "a"}, headers=key)
        await client.post("/v1/chat/completions", json=STREAM, headers=key)
        await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=key)
        await client.post("/v1/chat/completions", json=CHAT)  # no key: 401
        await client.post("/api/chat", json={**CHAT, "stream": False}, headers=key)
        samples = await scrape(client)  # no key needed
    requests = "llmgate_requests_total"
    assert value(samples, requests, model="alpha", surface="chat", status="200") == 2
    assert value(samples, requests, model="none", surface="chat", status="404") == 1
    assert value(samples, requests, model="none", surface="chat", status="401") == 1
    assert value(samples, requests, model="alpha", surface="ollama", status="200") == 1
    assert value(samples, "llmgate_prompt_tokens_total", model="alpha") == 3 * 7
    assert value(samples, "llmgate_completion_tokens_total", model="alpha") == 3 * 4


async def test_prompt_tokens_from_a_prefix_cache_are_counted_when_the_backend_says(app_client):
    scripts = {"alpha": FakeScript(prompt_tokens=9, cached_tokens=6)}
    async with app_client(scripts=scripts) as (client, _):
        await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/chat/completions", json=STREAM)
        await client.post("/v1/chat/completions", json={**CHAT, "model": "beta"})  # says nothing
        samples = await scrape(client)
    assert value(samples, "llmgate_prompt_tokens_total", model="alpha") == 2 * 9
    assert value(samples, "llmgate_prompt_tokens_cached_total", model="alpha") == 2 * 6
    assert value(samples, "llmgate_prompt_tokens_cached_total", model="beta") is None


async def test_latency_histograms_have_observations(app_client):
    async with app_client() as (client, _):
        await client.post("/v1/chat/completions", json=STREAM)
        await client.post("/v1/chat/completions", json=CHAT)
        samples = await scrape(client)
    ttft = "llmgate_time_to_first_token_seconds"
    assert value(samples, f"{ttft}_count", model="alpha", surface="chat") == 2
    assert value(samples, f"{ttft}_bucket", model="alpha", surface="chat", le="60.0") == 2
    assert value(samples, f"{ttft}_bucket", model="alpha", surface="chat", le="0.01") is not None
    duration = "llmgate_request_duration_seconds"
    assert value(samples, f"{duration}_count", model="alpha", surface="chat") == 2
    assert value(samples, f"{duration}_sum", model="alpha", surface="chat") > 0
    # four tokens per answer: three gaps each
    itl = "llmgate_inter_token_latency_seconds"
    assert value(samples, f"{itl}_count", model="alpha") == 6
    assert value(samples, f"{itl}_bucket", model="alpha", le="0.001") is not None
    assert value(samples, f"{itl}_bucket", model="alpha", le="2.0") == 6


async def test_an_unknown_model_name_never_becomes_a_label(app_client):
    async with app_client() as (client, _):
        for name in ("gpt-4o", "llama3:70b", "x" * 200):
            reply = await client.post("/v1/chat/completions", json={**CHAT, "model": name})
            assert reply.status_code == 404
        reply = await client.get("/metrics")
    assert "gpt-4o" not in reply.text and "llama3" not in reply.text
    assert label_values(parse(reply.text), "model") <= {"alpha", "beta", "none"}


async def test_failures_of_a_known_model_count_under_its_configured_name(app_client):
    scripts = {
        "alpha": FakeScript(fail_before_first=BackendTimeoutError("too slow")),
        "beta": FakeScript(fail_before_first=QueueFullError("busy", retry_after=1)),
    }
    async with app_client(scripts=scripts) as (client, _):
        assert (
            await client.post("/v1/chat/completions", json={**CHAT, "model": "a"})
        ).status_code == 504
        assert (
            await client.post("/v1/chat/completions", json={**CHAT, "model": "beta"})
        ).status_code == 429
        samples = await scrape(client)
    assert (
        value(samples, "llmgate_requests_total", model="alpha", surface="chat", status="504") == 1
    )
    assert (
        value(samples, "llmgate_upstream_errors_total", model="alpha", kind="backend_timeout") == 1
    )
    assert (
        value(samples, "llmgate_rate_limit_rejections_total", model="beta", reason="queue_full")
        == 1
    )
    assert value(samples, "llmgate_upstream_errors_total", model="beta", kind="queue_full") is None


async def test_each_app_has_its_own_registry(app_client):
    async with app_client() as (one, _), app_client() as (two, _):
        await one.post("/v1/chat/completions", json=CHAT)
        first, second = await scrape(one), await scrape(two)
    requests = "llmgate_requests_total"
    assert value(first, requests, model="alpha", surface="chat", status="200") == 1
    assert value(second, requests, model="alpha", surface="chat", status="200") is None


async def test_openmetrics_is_served_when_asked_for(app_client):
    async with app_client() as (client, _):
        reply = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.text.endswith("# EOF\n")


@asynccontextmanager
async def serving(server: ServerSettings, *models) -> AsyncIterator[httpx.AsyncClient]:
    config = GatewayConfig(server=server, models=list(models) or [fake_entry("alpha")])
    app = create_app(config, backend_factory=fake_factory())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_metrics_can_be_switched_off():
    async with serving(ServerSettings(metrics=False)) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_model_loaded_and_state_per_configured_model():
    models = (fake_entry("alpha"), fake_entry("lazy", preload=False))
    async with serving(ServerSettings(), *models) as client:
        samples = await scrape(client)
    assert value(samples, "llmgate_model_loaded", model="alpha", backend="fake") == 1
    assert value(samples, "llmgate_model_loaded", model="lazy", backend="fake") == 0
    assert value(samples, "llmgate_model_state", model="alpha", state="ok") == 1
    assert value(samples, "llmgate_model_state", model="lazy", state="unloaded") == 1
    assert (
        sum(value(samples, "llmgate_model_state", model="lazy", state=s) for s in MODEL_STATES) == 1
    )
    assert value(samples, "llmgate_requests_in_flight", model="alpha") == 0


class FakeEngineBackend(FakeBackend):
    """A FakeBackend with an in-process engine's numbers."""

    kind = "llama_cpp"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load_seconds: float | None = 2.5
        self.waiting = 3
        self.stats = SimpleNamespace(batch_size=1)


class FakeUpstreamBackend(FakeBackend):
    """A FakeBackend with an upstream's replicas, one of them down."""

    kind = "openai"

    def replica_health(self) -> dict[str, bool]:
        return {"http://r1:8000/v1": True, "http://r2:8000/v1": False}


async def test_engine_and_replica_gauges_are_read_at_scrape_time():
    engine, upstream = FakeEngineBackend("engine"), FakeUpstreamBackend("remote")
    router = ModelRouter([(fake_entry("engine"), engine), (fake_entry("remote"), upstream)])
    await router.start()
    router.activity.begin("engine")
    router.activity.begin("engine")
    samples = parse_families(ModelStateCollector(router, await router.health()))
    assert value(samples, "llmgate_model_loaded", model="engine", backend="llama_cpp") == 1
    assert value(samples, "llmgate_model_load_seconds", model="engine") == 2.5
    assert value(samples, "llmgate_queue_depth", model="engine") == 3
    assert value(samples, "llmgate_batch_size", model="engine") == 1
    assert value(samples, "llmgate_requests_in_flight", model="engine") == 2
    assert value(samples, "llmgate_requests_in_flight", model="remote") == 0
    replica = "llmgate_upstream_replica_up"
    assert value(samples, replica, model="remote", replica="http://r1:8000/v1") == 1
    assert value(samples, replica, model="remote", replica="http://r2:8000/v1") == 0
    # what a backend does not have is not reported as zero
    assert value(samples, "llmgate_queue_depth", model="remote") is None
    assert value(samples, "llmgate_model_load_seconds", model="remote") is None
    engine.waiting, engine.stats.batch_size = 0, 0  # read again on the next scrape
    again = parse_families(ModelStateCollector(router, await router.health()))
    assert value(again, "llmgate_queue_depth", model="engine") == 0
    assert value(again, "llmgate_batch_size", model="engine") == 0


def parse_families(collector: ModelStateCollector) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def test_an_engine_serving_one_request_at_a_time_has_a_batch_of_one_while_busy():
    stats = EngineStats(requests_started=3, requests_finished=1, requests_cancelled=1)
    assert stats.batch_size == 1
    stats.requests_finished += 1
    assert stats.batch_size == 0


def test_replica_availability_follows_failures_and_cool_down():
    now = [0.0]
    pool = ReplicaPool(
        ["http://a", "http://b"], failure_threshold=1, cooldown=10, clock=lambda: now[0]
    )
    pool.record_failure(pool.replicas[1])
    assert pool.availability() == {"http://a": True, "http://b": False}
    now[0] = 11.0
    assert pool.availability() == {"http://a": True, "http://b": True}
    pool.record_health(pool.replicas[0], ok=False)
    assert pool.availability() == {"http://a": False, "http://b": True}
