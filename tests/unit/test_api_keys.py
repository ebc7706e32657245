"""API keys stored hashed: matching, key ids in records, the models a key sees, config errors,
``llmgate hash-key``, and that neither a key nor a prompt ever reaches the logs."""

from __future__ import annotations

import logging

import pytest

from gateway.api_keys import hash_key, match_key
from gateway.cli import main
from gateway.config import ApiKey, ConfigError, parse_config
from gateway.request_record import RequestRecord

pytestmark = pytest.mark.anyio

SECRET = "sk-live-4f1b9c0e7d2a"
PROMPT = "zebra-quartz-pelican-7731"
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": PROMPT}]}


def test_a_hashed_key_matches_the_key_and_nothing_else():
    keys = [ApiKey(key="plain-one"), ApiKey(key=hash_key(SECRET), name="ci")]
    assert match_key(keys, SECRET) is keys[1]
    assert match_key(keys, "plain-one") is keys[0]
    assert match_key(keys, hash_key(SECRET)) is None  # the digest itself is no key
    assert match_key(keys, SECRET[:-1]) is None


def test_key_ids_name_a_key_without_revealing_it():
    hashed = ApiKey(key=hash_key(SECRET))
    assert ApiKey(key=SECRET).key_id == hashed.key_id == hash_key(SECRET)[7:15]
    assert ApiKey(key=SECRET, name="team-a").key_id == "team-a"


def test_a_hashed_key_is_normalised_to_lower_case():
    assert ApiKey(key=hash_key(SECRET).upper().replace("SHA256", "sha256")).key == hash_key(SECRET)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"api_keys": [{"key": "sha256:abc"}]}, "'sha256:' and 64 hex digits"),
        ({"api_keys": ["same", "same"]}, "two keys are named"),
        ({"api_keys": [{"key": "k", "rpm": 0}]}, "api_keys[0].rpm"),
        ({"model_limits": {"nope": {"rpm": 5}}}, "server.model_limits: model 'nope'"),
        ({"rate_limit_failure": "maybe"}, "rate_limit_failure"),
    ],
)
def test_config_errors_name_the_key(server, message):
    raw = {
        "server": server,
        "models": [{"name": "m", "backend": "openai", "base_url": "http://127.0.0.1:1/v1"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert message in str(caught.value)


async def test_hashed_keys_authenticate_and_list_only_their_models(app_client):
    keys = [
        ApiKey(key=hash_key(SECRET), models=["beta"]),
        ApiKey(key=hash_key("sk-other")),
    ]
    async with app_client(api_keys=keys) as (client, _):
        narrow = await client.get("/v1/models", headers={"Authorization": f"Bearer {SECRET}"})
        wide = await client.get("/v1/models", headers={"Authorization": "Bearer sk-other"})
        refused = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {SECRET}"}
        )
        digest = await client.get(
            "/v1/models", headers={"Authorization": f"Bearer {hash_key(SECRET)}"}
        )
    assert [m["id"] for m in narrow.json()["data"]] == ["beta"]
    assert {m["id"] for m in wide.json()["data"]} == {"alpha", "beta"}
    assert refused.status_code == 403 and digest.status_code == 401


async def test_the_record_names_the_key_by_id(app_client):
    seen: list[RequestRecord] = []
    async with app_client(api_keys=[ApiKey(key=hash_key(SECRET), name="ci")]) as (client, _):
        client._transport.app.state.record_observers.append(seen.append)  # type: ignore[attr-defined]
        await client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": SECRET})
    assert seen[0].key_id == "ci" and seen[0].status == 200


async def test_neither_keys_nor_prompts_reach_the_logs_at_debug(app_client, caplog):
    keys = [ApiKey(key=SECRET, rpm=1)]
    with caplog.at_level(logging.DEBUG):
        async with app_client(api_keys=keys) as (client, _):
            headers = {"Authorization": f"Bearer {SECRET}"}
            for path, body in (
                ("/v1/chat/completions", CHAT),
                ("/v1/chat/completions", CHAT),  # refused: rpm 1
                ("/v1/chat/completions", {**CHAT, "model": "nope"}),
                ("/v1/completions", {"model": "alpha", "prompt": PROMPT, "stream": True}),
            ):
                await client.post(path, json=body, headers=headers)
            await client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": "wrong"})
    logged = "\n".join(
        f"{r.getMessage()} {r.args} {getattr(r, '__dict__', '')}" for r in caplog.records
    )
    assert caplog.records, "nothing was logged: the check proves nothing"
    assert SECRET not in logged and PROMPT not in logged


def test_hash_key_prints_the_config_form(capsys):
    assert main(["hash-key", SECRET]) == 0
    assert capsys.readouterr().out.strip() == hash_key(SECRET)
