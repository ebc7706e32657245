"""Every error has the four-key OpenAI envelope and the right status (README: Errors)."""

from __future__ import annotations

import json
import logging

import pytest

from backends.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    ContextLengthExceededError,
    QueueFullError,
    UnsupportedParameterError,
    UpstreamError,
)
from tests.fakes import FakeScript

pytestmark = pytest.mark.anyio

GOOD = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}


def assert_envelope(reply, status: int, type_: str, code: str | None, param: str | None = None):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert body["error"]["message"]


async def test_malformed_json_is_400_not_422(app_client):
    async with app_client() as (client, _):
        reply = await client.post(
            "/v1/chat/completions",
            content=b'{"model": ',
            headers={"content-type": "application/json"},
        )
    assert_envelope(reply, 400, "invalid_request_error", "invalid_request")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "alpha"}, "messages"),
        ({"model": "alpha", "messages": []}, "messages"),
        ({"model": "alpha", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "alpha", "messages": [{"role": "user"}]}, "messages[0]"),
        ({"model": "alpha", "messages": [{"role": "tool", "content": "42"}]}, "messages[0]"),
        ({**GOOD, "temperature": 5}, "temperature"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "n": 1000}, "n"),
        ({**GOOD, "top_p": 0}, "top_p"),
        ({**GOOD, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({**GOOD, "logit_bias": {"5": 500}}, "logit_bias.5"),
        ({**GOOD, "top_logprobs": 3}, "top_logprobs"),
        ({**GOOD, "stream": "yes please"}, "stream"),
        ({**GOOD, "response_format": {"type": "xml"}}, "response_format.type"),
        ({**GOOD, "messages": "hello"}, "messages"),
        (
            {**GOOD, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content",
        ),
        (
            {**GOOD, "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
            "messages[0].content",
        ),
        ({**GOOD, "tool_choice": {"type": "function"}}, "tool_choice"),
    ],
)
async def test_schema_violation_is_400_naming_the_field(app_client, body, param):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=body)
    assert_envelope(reply, 400, "invalid_request_error", "invalid_request", param)


async def test_a_check_across_fields_says_what_is_wrong_not_that_the_body_is_no_object(
    app_client,
):
    # found by the fuzz tests: "request body must be a JSON object: Value error, top_logprobs..."
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json={**GOOD, "top_logprobs": 3})
    assert_envelope(reply, 400, "invalid_request_error", "invalid_request", "top_logprobs")
    assert reply.json()["error"]["message"] == "top_logprobs requires logprobs to be true"
    async with app_client() as (client, _):
        body = {"model": GOOD["model"], "prompt": "x", "n": 3, "best_of": 2}
        reply = await client.post("/v1/completions", json=body)
    assert_envelope(reply, 400, "invalid_request_error", "invalid_request", "best_of")


@pytest.mark.parametrize("raw", [b"", b"[]", b"42", b"null", b'"text"', b"\xff\xfe", b"{" * 5000])
async def test_body_of_any_shape_is_a_400(app_client, raw):
    async with app_client() as (client, _):
        reply = await client.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 400
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


async def test_unknown_fields_are_ignored(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json={**GOOD, "vendor_extra": {"x": 1}})
    assert reply.status_code == 200


async def test_unknown_model_is_404_with_param(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json={**GOOD, "model": "gpt-9"})
    assert_envelope(reply, 404, "invalid_request_error", "model_not_found", "model")
    assert "gpt-9" in reply.json()["error"]["message"]


async def test_unknown_route_is_404_and_wrong_method_is_405(app_client):
    async with app_client() as (client, _):
        missing = await client.get("/v1/nothing-here")
        wrong = await client.get("/v1/chat/completions")
        ollama = await client.delete("/api/tags")
    assert_envelope(missing, 404, "invalid_request_error", None)
    assert_envelope(wrong, 405, "invalid_request_error", None)
    assert wrong.headers["allow"] == "POST"  # RFC 9110: a 405 lists what the route takes
    assert ollama.status_code == 405 and "error" in ollama.json()
    assert ollama.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("error", "status", "type_", "code", "param", "retry_after"),
    [
        (
            ContextLengthExceededError("too long", param="messages"),
            400,
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
            None,
        ),
        (
            UnsupportedParameterError("no tools", param="tools"),
            400,
            "invalid_request_error",
            "unsupported_parameter",
            "tools",
            None,
        ),
        (QueueFullError("busy", retry_after=1), 429, "rate_limit_error", "queue_full", None, "1"),
        (UpstreamError("bad upstream"), 502, "api_error", "upstream_error", None, None),
        (
            BackendUnavailableError("down", retry_after=5),
            503,
            "api_error",
            "backend_unavailable",
            None,
            "5",
        ),
        (BackendTimeoutError("slow"), 504, "api_error", "backend_timeout", None, None),
    ],
)
async def test_backend_errors_map_to_status_and_envelope(
    app_client, error, status, type_, code, param, retry_after
):
    scripts = {"alpha": FakeScript(fail_before_first=error)}
    async with app_client(scripts=scripts) as (client, _):
        for stream in (False, True):
            reply = await client.post("/v1/chat/completions", json={**GOOD, "stream": stream})
            assert_envelope(reply, status, type_, code, param)
            assert reply.headers.get("retry-after") == retry_after


async def test_a_bug_is_a_generic_500_and_the_server_keeps_serving(app_client):
    scripts = {"alpha": FakeScript(fail_before_first=KeyError("internal detail"))}
    async with app_client(scripts=scripts) as (client, _):
        reply = await client.post("/v1/chat/completions", json=GOOD)
        assert_envelope(reply, 500, "api_error", "internal_error")
        assert "internal detail" not in reply.text
        again = await client.post("/v1/chat/completions", json={**GOOD, "model": "beta"})
    assert again.status_code == 200


async def test_a_bug_is_answered_and_logged_as_a_500_with_the_request_id(app_client, caplog):
    caplog.set_level(logging.INFO, logger="llmgate.requests")
    scripts = {"alpha": FakeScript(fail_before_first=KeyError("internal detail"))}
    async with app_client(scripts=scripts) as (client, _):
        headers = {"X-Request-ID": "bug-1"}
        reply = await client.post("/v1/chat/completions", json=GOOD, headers=headers)
    assert_envelope(reply, 500, "api_error", "internal_error")
    assert reply.headers["x-request-id"] == "bug-1"
    lines = [r.getMessage() for r in caplog.records if "request_id=bug-1 " in r.getMessage()]
    assert lines and lines[0].startswith("POST /v1/chat/completions 500 "), lines
    assert " error=internal_error " in lines[0]


@pytest.mark.parametrize(
    ("body", "keys", "status", "code"),
    [
        (GOOD, ["sekret"], 401, "invalid_api_key"),
        ({**GOOD, "model": "nope"}, [], 404, "model_not_found"),
        ({"model": "alpha"}, [], 400, "invalid_request"),
    ],
)
async def test_a_refused_request_is_logged_with_its_error(
    app_client, caplog, body, keys, status, code
):
    caplog.set_level(logging.INFO, logger="llmgate.requests")
    async with app_client(api_keys=keys) as (client, _):
        headers = {"X-Request-ID": "refused-1"}
        reply = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == status
    lines = [r.getMessage() for r in caplog.records if "request_id=refused-1 " in r.getMessage()]
    assert lines and f" error={code} " in lines[0], lines


async def test_missing_or_wrong_api_key_is_401(app_client):
    async with app_client(api_keys=["sekret"]) as (client, _):
        none = await client.post("/v1/chat/completions", json=GOOD)
        wrong = await client.post(
            "/v1/chat/completions", json=GOOD, headers={"Authorization": "Bearer nope"}
        )
        models = await client.get("/v1/models")
        ok = await client.post(
            "/v1/chat/completions", json=GOOD, headers={"Authorization": "Bearer sekret"}
        )
        health = await client.get("/health")
    for reply in (none, wrong, models):
        assert_envelope(reply, 401, "authentication_error", "invalid_api_key")
    assert ok.status_code == 200
    assert health.status_code == 200


async def test_key_not_allowed_this_model_is_403_and_hidden_from_list(app_client):
    keys = [{"key": "k1", "models": ["beta"]}]
    from gateway.config import ApiKey

    async with app_client(api_keys=[ApiKey(**k) for k in keys]) as (client, _):
        auth = {"Authorization": "Bearer k1"}
        denied = await client.post("/v1/chat/completions", json=GOOD, headers=auth)
        allowed = await client.post(
            "/v1/chat/completions", json={**GOOD, "model": "beta"}, headers=auth
        )
        listed = await client.get("/v1/models", headers=auth)
    assert_envelope(denied, 403, "permission_error", "model_not_allowed", "model")
    assert allowed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["beta"]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (UnsupportedParameterError("no", param="x"), 400, "invalid_request_error"),
        (QueueFullError("full", retry_after=1), 429, "rate_limit_error"),
        (BackendUnavailableError("down"), 503, "overloaded_error"),
        (BackendTimeoutError("slow"), 504, "timeout_error"),
        (UpstreamError("broken"), 502, "api_error"),
    ],
)
def test_each_surface_gets_its_own_error_shape(error, status, kind):
    from gateway.errors import error_response

    openai = error_response(error, "/v1/chat/completions")
    ollama = error_response(error, "/api/chat")
    anthropic = error_response(error, "/v1/messages")
    assert openai.status_code == ollama.status_code == anthropic.status_code == status
    assert set(json.loads(openai.body)["error"]) == {"message", "type", "param", "code"}
    assert json.loads(ollama.body) == {"error": error.message}
    assert json.loads(anthropic.body) == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
    }


async def test_unknown_routes_and_missing_keys_answer_in_the_surfaces_shape(app_client):
    async with app_client(api_keys=["sk-1"]) as (client, _):
        ollama = await client.post("/api/nope", headers={"authorization": "Bearer sk-1"})
        anthropic = await client.post("/v1/messages/nope", headers={"x-api-key": "sk-1"})
        no_key = await client.post("/api/chat", json={})
        no_key_anthropic = await client.post("/v1/messages", json={})
        version = await client.get("/api/version")
    assert ollama.status_code == 404 and set(ollama.json()) == {"error"}
    assert anthropic.status_code == 404
    assert anthropic.json()["error"]["type"] == "not_found_error"
    assert no_key.status_code == 401 and set(no_key.json()) == {"error"}
    assert no_key_anthropic.json()["error"]["type"] == "authentication_error"
    assert version.status_code != 401  # Ollama clients probe the version without a key


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "messages", 0, "role"), "messages[0].role"),
        (("body", "history", 0, "Turn", "content"), "history[0].content"),
        (("body", "stop", "str"), "stop"),
        (("body", "input", 1, "function-after[_check(), InputItem]"), "input[1]"),
        (("body",), None),
    ],
)
def test_param_names_the_field_not_the_union_members(loc, param):
    from gateway.errors import param_from_loc

    assert param_from_loc(loc) == param


LONE = '"emoji cut: \\ud83d"'  # JSON text escaping a lone high surrogate (a JS slice(0, n))


@pytest.mark.parametrize(
    ("path", "template", "shape"),
    [
        (
            "/v1/chat/completions",
            '{"model":"alpha","messages":[{"role":"user","content":%s}]}',
            "openai",
        ),
        ("/v1/completions", '{"model":"alpha","prompt":%s}', "openai"),
        ("/v1/responses", '{"model":"alpha","input":"hi","metadata":{"a":%s}}', "openai"),
        ("/v1/embeddings", '{"model":"alpha","input":%s}', "openai"),
        ("/v1/messages", '{"model":%s,"max_tokens":5,"messages":[]}', "anthropic"),
        ("/api/chat", '{"model":"alpha","messages":[{"role":"user","content":%s}]}', "ollama"),
        ("/", '{"prompt":%s}', "openai"),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_a_400_in_the_surfaces_shape(
    app_client, path, template, shape
):
    async with app_client() as (client, fakes):
        reply = await client.post(
            path, content=template % LONE, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 400
    body = reply.json()
    message = {
        "openai": lambda: body["error"]["message"],
        "anthropic": lambda: body["error"]["message"],
        "ollama": lambda: body["error"],
    }[shape]()
    assert "lone UTF-16 surrogate (\\ud83d)" in message
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert all(not fake.requests for fake in fakes.values())


async def test_a_surrogate_pair_and_an_escaped_backslash_are_text():
    from gateway.json_body import lone_surrogate

    for text in ('"\\ud83d\\ude00"', '"\\\\ud83d"', '"plain \\u00e9"'):
        assert lone_surrogate({"body": f'{{"a":{text}}}'.encode()}) is None
    assert lone_surrogate({"body": b'{"a":"\\udc00"}'}) is not None  # a lone low one too
    assert lone_surrogate({"body": b'{"a":"\\ud83d'}) is None  # not JSON: the route says so
    deep = b"[" * 100_000 + b'"\\ud83d"' + b"]" * 100_000
    assert lone_surrogate({"body": deep}) is None  # too deep for json: the route's to refuse


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.2, "1"), (1.0, "1"), (13.5, "14"), (59.01, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    """A client that waits exactly `Retry-After` must not come back early (13.5 s was 13)."""
    from backends.errors import RateLimitError

    assert RateLimitError("slow down", retry_after=seconds).headers() == {"Retry-After": header}
