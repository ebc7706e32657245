"""Browser pages and the API (``server.cors_origins``): pages served from this machine may call
it by default (as Ollama allows), other sites only when named; a preflight is answered before
the key is checked, and errors carry the headers a page needs to read them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

pytestmark = pytest.mark.anyio

KEY = "sk-test"
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080", "https://localhost",
     "tauri://localhost", "app://obsidian.md"],
)  # fmt: skip
async def test_local_pages_may_call_by_default_even_with_keys(app_client, origin):
    async with app_client(api_keys=[KEY]) as (client, _):
        asked = await client.options("/v1/chat/completions", headers=preflight(origin))
        reply = await client.post(
            "/v1/chat/completions", json=CHAT,
            headers={"Origin": origin, "Authorization": f"Bearer {KEY}"},
        )  # fmt: skip
    assert asked.status_code == 200
    assert asked.headers["access-control-allow-origin"] == origin
    assert "POST" in asked.headers["access-control-allow-methods"]
    assert "authorization" in asked.headers["access-control-allow-headers"].lower()
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in reply.headers["access-control-expose-headers"]


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "http://127.0.0.1.nip.io"]
)
async def test_other_sites_may_not_by_default(app_client, origin):
    async with app_client() as (client, _):
        asked = await client.options("/v1/chat/completions", headers=preflight(origin))
        reply = await client.get("/v1/models", headers={"Origin": origin})
    assert asked.status_code == 400
    assert "access-control-allow-origin" not in asked.headers
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


async def test_named_origins_only_and_errors_readable(app_client):
    site = "https://chat.example.com"
    async with app_client(api_keys=[KEY], cors_origins=[site]) as (client, _):
        asked = await client.options("/v1/chat/completions", headers=preflight(site))
        local = await client.options("/v1/chat/completions", headers=preflight("http://localhost"))
        refused = await client.post("/v1/chat/completions", json=CHAT, headers={"Origin": site})
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == site
    assert local.status_code == 400
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == site
    assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_any_origin_with_a_star(app_client):
    async with app_client(cors_origins=["*"]) as (client, _):
        reply = await client.get("/v1/models", headers={"Origin": "https://anywhere.example"})
    assert reply.headers["access-control-allow-origin"] == "*"


async def test_none_when_empty(app_client):
    async with app_client(cors_origins=[]) as (client, _):
        asked = await client.options(
            "/v1/chat/completions", headers=preflight("http://localhost:5173")
        )
        reply = await client.get("/v1/models", headers={"Origin": "http://localhost:5173"})
    assert "access-control-allow-origin" not in asked.headers
    assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize(
    "origin", ["https://chat.example.com/", "chat.example.com", "https://a.example/path", ""]
)
def test_a_bad_origin_is_a_config_error_naming_the_key(origin):
    raw = {
        "server": {"cors_origins": [origin]},
        "models": [{"name": "m", "backend": "ollama", "base_url": "http://127.0.0.1:1"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert "cors_origins" in str(caught.value) and "not an origin" in str(caught.value)


async def test_a_request_without_an_origin_passes_untouched(app_client):
    """SDKs and scripts send no Origin: no CORS headers, not even Vary (the layer is skipped)."""
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=CHAT)
        listed = await client.get("/v1/models")
    for answer in (reply, listed):
        assert answer.status_code == 200
        assert not any(name.startswith("access-control-") for name in answer.headers)
        assert "vary" not in answer.headers
