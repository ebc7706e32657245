from __future__ import annotations

import pytest

from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio


async def test_models_lists_public_names_with_aliases_and_load_state(app_client):
    async with app_client() as (client, _):
        reply = await client.get("/v1/models")
    assert reply.status_code == 200
    data = reply.json()
    assert data["object"] == "list"
    assert [(m["id"], m["aliases"], m["loaded"]) for m in data["data"]] == [
        ("alpha", ["default", "a"], True),
        ("beta", [], True),
    ]
    assert all(m["object"] == "model" and m["owned_by"] for m in data["data"])


async def test_retrieve_model_by_name_or_alias(app_client):
    async with app_client() as (client, _):
        by_name = await client.get("/v1/models/alpha")
        by_alias = await client.get("/v1/models/default")
        missing = await client.get("/v1/models/nope")
    assert by_name.json()["id"] == by_alias.json()["id"] == "alpha"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_alias_routes_to_the_same_backend(app_client):
    body = {"messages": [{"role": "user", "content": "x"}]}
    async with app_client() as (client, fakes):
        for name in ("alpha", "default", "a"):
            reply = await client.post("/v1/chat/completions", json={**body, "model": name})
            assert reply.json()["model"] == name
        await client.post("/v1/chat/completions", json={**body, "model": "beta"})
    assert len(fakes["alpha"].requests) == 3
    assert len(fakes["beta"].requests) == 1


async def test_health_reports_each_model(app_client):
    async with app_client() as (client, _):
        reply = await client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "models": {"alpha": {"status": "ok"}, "beta": {"status": "ok"}},
    }


async def test_lifespan_closes_every_backend(app_client):
    async with app_client() as (_, fakes):
        pass
    assert all(f.closed for f in fakes.values())


async def test_each_model_lists_its_task_and_the_endpoints_that_serve_it(app_client):
    models = [fake_entry("alpha"), fake_entry("vectors", task="embed")]
    async with app_client(models=models) as (client, _):
        data = (await client.get("/v1/models")).json()["data"]
    cards = {m["id"]: (m["task"], m["endpoints"]) for m in data}
    assert cards == {
        "alpha": (
            "generate",
            [
                "/v1/chat/completions",
                "/v1/completions",
                "/v1/responses",
                "/v1/messages",
                "/api/chat",
                "/api/generate",
                "/",
            ],
        ),
        "vectors": ("embed", ["/v1/embeddings", "/api/embed", "/api/embeddings"]),
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
        ("/v1/responses", {"input": "x"}),
        ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"prompt": "x"}),
        ("/", {"prompt": "x"}),
    ],
)
async def test_an_embedding_model_on_a_generation_route_is_a_400_saying_what_it_serves(
    app_client, path, body
):
    models = [fake_entry("vectors", ["default"], task="embed")]
    async with app_client(models=models) as (client, fakes):
        reply = await client.post(path, json={**body, "model": "vectors"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    message = error if isinstance(error, str) else error["message"]  # Ollama: the message alone
    assert "embedding model" in message and "/v1/embeddings" in message
    if path.startswith("/v1/chat") or path in ("/v1/completions", "/v1/responses", "/"):
        assert error["param"] == "model" and error["code"] == "model_not_supported"
    assert fakes["vectors"].requests == []
