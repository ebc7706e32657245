"""Model lifecycle over FakeLoadingBackends, through the real app: loads on demand exactly once,
the max_loaded_models budget with least-recently-used eviction that spares busy models, idle
unloads on a fake clock (no sleeps), load failures, states in /v1/models and /health, Ollama's
keep_alive, the admin routes and their auth."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backends.errors import BackendUnavailableError
from backends.registry import BackendSettings
from backends.upstream.settings import OpenAICompatSettings
from gateway import metered_backend
from gateway.app import create_app
from gateway.config import ApiKey, GatewayConfig, ServerSettings
from gateway.lifecycle import ModelLifecycle
from tests.fakes import FakeLoadingBackend
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

CHAT = [{"role": "user", "content": "hi"}]


class FakeClock:
    """A monotonic clock that moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    client: httpx.AsyncClient
    fakes: dict[str, FakeLoadingBackend]
    app: FastAPI
    clock: FakeClock

    @property
    def lifecycle(self) -> ModelLifecycle:
        lifecycle: ModelLifecycle = self.app.state.lifecycle
        return lifecycle

    async def chat(self, model: str, **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": CHAT, **extra}
        return await self.client.post("/v1/chat/completions", json=body)


def lazy(name: str, **extra: Any) -> BackendSettings:
    return fake_entry(name, preload=False, **extra)


@asynccontextmanager
async def served(
    models: list[BackendSettings],
    max_loaded: int | None = None,
    api_keys: list[Any] | None = None,
) -> AsyncIterator[Served]:
    fakes: dict[str, FakeLoadingBackend] = {}

    def build(settings: BackendSettings, _base_dir: Path | None) -> FakeLoadingBackend:
        fakes[settings.name] = FakeLoadingBackend(settings.name)
        return fakes[settings.name]

    server = ServerSettings(api_keys=api_keys or [], max_loaded_models=max_loaded)
    config = GatewayConfig(server=server, models=models)
    app = create_app(config, backend_factory=build)
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        # BackendActivity stamps last use with time.monotonic: the fake clock there too
        patch.setattr(metered_backend, "time", SimpleNamespace(monotonic=clock))
        async with app.router.lifespan_context(app):
            router = app.state.router
            # the same lifecycle as the app's, on the fake clock
            app.state.lifecycle = ModelLifecycle(
                router.routes, config.models, router.activity, max_loaded, clock
            )
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Served(client, fakes, app, clock)


async def until(condition: Any) -> None:
    """Let other tasks run until ``condition()`` holds (event-loop turns, not time)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# -- loading on demand ---------------------------------------------------------------------------


async def test_concurrent_first_requests_trigger_exactly_one_load():
    async with served([lazy("a")]) as s:
        gate = s.fakes["a"].load_gate = asyncio.Event()
        requests = [asyncio.create_task(s.chat("a")) for _ in range(5)]
        await until(lambda: s.lifecycle.in_flight("a") == 5)
        assert s.lifecycle.state("a") == ("loading", None)
        gate.set()
        replies = await asyncio.gather(*requests)
    assert [r.status_code for r in replies] == [200] * 5
    assert s.fakes["a"].loads == 1


async def test_load_failure_is_503_with_the_reason_and_other_models_keep_serving():
    async with served([lazy("a"), lazy("b")]) as s:
        s.fakes["a"].load_error = BackendUnavailableError("model 'a' failed to load: no file")
        failed = await s.chat("a")
        other = await s.chat("b")
        cards = {m["id"]: m for m in (await s.client.get("/v1/models")).json()["data"]}
        health = await s.client.get("/health")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "backend_unavailable"
    assert "no file" in failed.json()["error"]["message"]
    assert other.status_code == 200
    assert (cards["a"]["state"], cards["a"]["loaded"]) == ("error", False)
    assert "no file" in cards["a"]["load_error"]
    assert (cards["b"]["state"], cards["b"]["loaded"]) == ("loaded", True)
    assert "load_error" not in cards["b"]
    assert health.status_code == 200  # a lazy model's failure does not make the server unready
    assert health.json()["models"]["a"] == {"status": "error", "detail": cards["a"]["load_error"]}


async def test_a_failed_model_loads_once_the_cause_is_gone():
    async with served([lazy("a")]) as s:
        s.fakes["a"].load_error = RuntimeError("disk on fire")
        assert (await s.chat("a")).status_code == 503
        assert s.lifecycle.state("a") == ("error", "model 'a' failed to load: disk on fire")
        s.fakes["a"].load_error = None
        assert (await s.chat("a")).status_code == 200
        assert s.lifecycle.state("a") == ("loaded", None)


async def test_models_list_shows_loading_while_a_load_runs():
    async with served([lazy("a")]) as s:
        gate = s.fakes["a"].load_gate = asyncio.Event()
        request = asyncio.create_task(s.chat("a"))
        await until(lambda: s.fakes["a"].loads == 1)
        card = (await s.client.get("/v1/models/a")).json()
        gate.set()
        await request
        after = (await s.client.get("/v1/models/a")).json()
    assert (card["state"], card["loaded"]) == ("loading", False)
    assert (after["state"], after["loaded"]) == ("loaded", True)


# -- the budget ----------------------------------------------------------------------------------


async def test_the_least_recently_used_idle_model_makes_room():
    async with served([lazy("a"), lazy("b"), lazy("c")], max_loaded=2) as s:
        await s.chat("a")
        s.clock.advance(1)
        await s.chat("b")
        s.clock.advance(1)
        await s.chat("a")  # b is now the least recently used
        s.clock.advance(1)
        assert (await s.chat("c")).status_code == 200
        loaded = {name for name, fake in s.fakes.items() if fake.loaded}
    assert loaded == {"a", "c"}
    assert (s.fakes["b"].unloads, s.fakes["a"].unloads) == (1, 0)


async def test_a_model_with_a_request_in_flight_is_never_evicted():
    async with served([lazy("a"), lazy("b")], max_loaded=1) as s:
        hold = s.fakes["a"].hold = asyncio.Event()
        streaming = asyncio.create_task(s.chat("a", stream=True))
        await s.fakes["a"].holding.wait()
        refused = await s.chat("b")
        assert s.fakes["a"].loaded and not s.fakes["b"].loaded
        hold.set()
        assert (await streaming).status_code == 200
        served_after = await s.chat("b")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "backend_unavailable"
    assert "max_loaded_models is 1" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "5"
    assert served_after.status_code == 200
    assert (s.fakes["a"].unloads, s.fakes["b"].loads) == (1, 1)


async def test_a_model_being_loaded_is_not_evicted_by_another_load():
    async with served([lazy("a"), lazy("b")], max_loaded=1) as s:
        gate = s.fakes["a"].load_gate = asyncio.Event()
        first = asyncio.create_task(s.chat("a"))
        await until(lambda: s.fakes["a"].loads == 1)
        refused = await s.chat("b")
        gate.set()
        assert (await first).status_code == 200
    assert refused.status_code == 503
    assert s.fakes["b"].loads == 0


async def test_upstream_models_do_not_count_against_the_budget():
    upstream = OpenAICompatSettings(
        name="remote", backend="openai", base_url=["http://127.0.0.1:9"], preload=False
    )
    async with served([lazy("a"), upstream], max_loaded=1) as s:
        await s.chat("remote")
        assert (await s.chat("a")).status_code == 200
        assert s.fakes["remote"].loaded and s.fakes["a"].loaded


def test_config_refuses_more_preloaded_models_than_the_budget():
    with pytest.raises(ValueError, match="max_loaded_models is 1 but 2 in-process models"):
        GatewayConfig(
            server=ServerSettings(max_loaded_models=1),
            models=[fake_entry("a"), fake_entry("b"), lazy("c")],
        )


# -- idle unload ---------------------------------------------------------------------------------


async def test_an_idle_model_is_unloaded_after_idle_unload_after_and_loads_again():
    async with served([lazy("a", idle_unload_after="1m"), lazy("b")]) as s:
        await s.chat("a")
        await s.chat("b")
        s.clock.advance(59)
        assert await s.lifecycle.reap() == []
        s.clock.advance(2)
        assert await s.lifecycle.reap() == ["a"]  # b has no idle_unload_after
        assert not s.fakes["a"].loaded and s.fakes["b"].loaded
        assert (await s.chat("a")).status_code == 200
    assert (s.fakes["a"].loads, s.fakes["a"].unloads) == (2, 1)


async def test_a_busy_model_is_not_unloaded_however_long_its_request_runs():
    async with served([lazy("a", idle_unload_after=10)]) as s:
        hold = s.fakes["a"].hold = asyncio.Event()
        streaming = asyncio.create_task(s.chat("a", stream=True))
        await s.fakes["a"].holding.wait()
        s.clock.advance(3600)
        assert await s.lifecycle.reap() == []
        hold.set()
        await streaming
        s.clock.advance(11)  # idle time counts from the end of the last request
        assert await s.lifecycle.reap() == ["a"]


async def test_the_background_check_runs_reap():
    async with served([lazy("a", idle_unload_after=10)]) as s:
        await s.chat("a")
        s.clock.advance(11)
        async with s.lifecycle.running(interval=0):
            await until(lambda: not s.fakes["a"].loaded)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(300, 300.0), ("300s", 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5m", 90.0)],
)
def test_idle_unload_after_takes_seconds_or_durations(value, seconds):
    assert lazy("a", idle_unload_after=value).idle_unload_after == seconds


@pytest.mark.parametrize("value", ["5 minutes", "5", 0, "-1m"])
def test_idle_unload_after_refuses_what_is_not_a_positive_duration(value):
    with pytest.raises(ValueError, match="idle_unload_after"):
        lazy("a", idle_unload_after=value)


def test_idle_unload_after_is_not_a_key_of_upstream_models():
    with pytest.raises(ValueError, match="idle_unload_after"):
        OpenAICompatSettings(
            name="r", backend="openai", base_url=["http://x"], idle_unload_after=60
        )


# -- Ollama's keep_alive -------------------------------------------------------------------------


async def test_keep_alive_on_a_request_sets_the_idle_timeout():
    async with served([lazy("a", idle_unload_after="1h")]) as s:
        body = {"model": "a", "prompt": "x", "stream": False, "keep_alive": "10s"}
        assert (await s.client.post("/api/generate", json=body)).status_code == 200
        assert s.lifecycle.ttl("a") == 10
        s.clock.advance(11)
        assert await s.lifecycle.reap() == ["a"]
        assert s.lifecycle.ttl("a") == 3600  # after an unload, config's timeout again


async def test_keep_alive_is_the_requests_own_the_next_request_brings_back_the_entrys():
    # Ollama applies keep_alive per request: a later request without one (any surface) has
    # the default timeout again
    async with served([lazy("a", idle_unload_after="1h")]) as s:
        body = {"model": "a", "prompt": "x", "stream": False, "keep_alive": -1}
        assert (await s.client.post("/api/generate", json=body)).status_code == 200
        assert s.lifecycle.ttl("a") is None
        assert (await s.client.post("/api/generate", json={**body, "keep_alive": "2m"})).is_success
        assert s.lifecycle.ttl("a") == 120
        assert (await s.chat("a")).status_code == 200  # OpenAI: no keep_alive
        assert s.lifecycle.ttl("a") == 3600
        body.pop("keep_alive")
        await s.client.post("/api/generate", json={**body, "keep_alive": "2m"})
        assert (await s.client.post("/api/generate", json=body)).status_code == 200
        assert s.lifecycle.ttl("a") == 3600


async def test_ps_says_when_an_idle_model_will_be_unloaded():
    async with served([lazy("a", idle_unload_after="1h"), lazy("b")]) as s:
        body = {"model": "a", "prompt": "x", "stream": False, "keep_alive": "10m"}
        await s.client.post("/api/generate", json=body)
        await s.client.post("/api/generate", json={"model": "b"})  # loaded, no timeout
        s.clock.advance(60)
        assert s.lifecycle.expires_in("a") == 540
        assert s.lifecycle.expires_in("b") is None
        listed = (await s.client.get("/api/ps")).json()["models"]
    expires = {m["name"]: dt.datetime.fromisoformat(m["expires_at"]) for m in listed}
    ahead = expires["a"] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=8) < ahead <= dt.timedelta(minutes=9)
    assert expires["b"].year > 2300  # Ollama's "forever"


async def test_negative_keep_alive_keeps_the_model_loaded():
    async with served([lazy("a", idle_unload_after=10)]) as s:
        chat = {"model": "a", "messages": CHAT, "stream": False, "keep_alive": -1}
        await s.client.post("/api/chat", json=chat)
        s.clock.advance(10_000)
        assert await s.lifecycle.reap() == []


async def test_a_load_request_with_keep_alive_0_unloads_the_model():
    async with served([lazy("a")]) as s:
        loaded = await s.client.post("/api/generate", json={"model": "a"})
        unloaded = await s.client.post("/api/generate", json={"model": "a", "keep_alive": 0})
        chat = await s.client.post("/api/chat", json={"model": "a", "keep_alive": "0"})
    assert loaded.json()["done_reason"] == "load"
    assert unloaded.json()["done_reason"] == "unload"
    assert chat.json()["done_reason"] == "unload"
    assert chat.json()["message"] == {"role": "assistant", "content": ""}
    assert (s.fakes["a"].loads, s.fakes["a"].unloads) == (1, 1)


async def test_keep_alive_0_on_a_generation_unloads_once_it_is_done():
    async with served([lazy("a")]) as s:
        body = {"model": "a", "prompt": "x", "stream": False, "keep_alive": 0}
        assert (await s.client.post("/api/generate", json=body)).status_code == 200
        assert s.fakes["a"].loaded
        assert await s.lifecycle.reap() == ["a"]


async def test_a_keep_alive_that_is_not_a_duration_is_a_400():
    async with served([lazy("a")]) as s:
        body = {"model": "a", "prompt": "x", "keep_alive": "soon"}
        reply = await s.client.post("/api/generate", json=body)
    assert reply.status_code == 400
    assert "not a duration" in reply.json()["error"]


# -- the admin routes ----------------------------------------------------------------------------


async def test_admin_load_and_unload_by_name_or_alias():
    async with served([lazy("a", aliases=["alias-a"]), lazy("b")]) as s:
        loaded = await s.client.post("/admin/models/alias-a/load")
        listed = (await s.client.get("/admin/models")).json()["models"]
        unloaded = await s.client.post("/admin/models/a/unload")
        again = await s.client.post("/admin/models/a/unload")
    assert (loaded.status_code, loaded.json()) == (200, {"model": "a", "state": "loaded"})
    states = {m["model"]: (m["state"], m["in_flight"]) for m in listed}
    assert states == {"a": ("loaded", 0), "b": ("unloaded", 0)}
    assert unloaded.json() == {"model": "a", "state": "unloaded"}
    assert again.status_code == 200  # idempotent
    assert (s.fakes["a"].loads, s.fakes["a"].unloads) == (1, 1)


async def test_admin_routes_refuse_an_unknown_model_with_404():
    async with served([lazy("a")]) as s:
        reply = await s.client.post("/admin/models/nope/load")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"


async def test_admin_unload_of_a_busy_model_is_409():
    async with served([lazy("a")]) as s:
        hold = s.fakes["a"].hold = asyncio.Event()
        streaming = asyncio.create_task(s.chat("a", stream=True))
        await s.fakes["a"].holding.wait()
        busy = await s.client.post("/admin/models/a/unload")
        hold.set()
        await streaming
        done = await s.client.post("/admin/models/a/unload")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "model_busy"
    assert done.status_code == 200


async def test_admin_load_failure_is_503_with_the_reason():
    async with served([lazy("a")]) as s:
        s.fakes["a"].load_error = BackendUnavailableError("model 'a' failed to load: bad GGUF")
        reply = await s.client.post("/admin/models/a/load")
        listed = (await s.client.get("/admin/models")).json()["models"]
    assert reply.status_code == 503
    assert "bad GGUF" in reply.json()["error"]["message"]
    assert listed[0]["state"] == "error" and "bad GGUF" in listed[0]["error"]


async def test_admin_routes_need_an_admin_key_when_keys_are_configured():
    keys = [ApiKey(key="user-key"), ApiKey(key="admin-key", admin=True)]
    async with served([lazy("a")], api_keys=keys) as s:
        anonymous = await s.client.post("/admin/models/a/load")
        user = await s.client.post(
            "/admin/models/a/load", headers={"Authorization": "Bearer user-key"}
        )
        admin = await s.client.post(
            "/admin/models/a/load", headers={"Authorization": "Bearer admin-key"}
        )
    assert anonymous.status_code == 401
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "permission_denied"
    assert admin.status_code == 200


async def test_admin_routes_are_open_when_no_keys_are_configured():
    async with served([lazy("a")]) as s:
        assert (await s.client.get("/admin/models")).status_code == 200
