"""The request record: one per HTTP request, with its id echoed, who served it, its tokens and
timings, as every observer sees it; and the metered backend that fills it for every surface."""

from __future__ import annotations

import pytest

from backends.openai_types import ChatCompletionRequest
from backends.protocol import OpenAIRelay
from gateway.metered_backend import BackendActivity, MeteredBackend
from gateway.request_record import RequestRecord, surface_of_path
from tests.fakes import FakeBackend, FakeRelay, FakeScript

pytestmark = pytest.mark.anyio

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}


async def records_of(app_client, *requests, **options):
    seen: list[RequestRecord] = []
    async with app_client(**options) as (client, fakes):
        client._transport.app.state.record_observers.append(seen.append)  # type: ignore[attr-defined]
        replies = [await client.request(method, path, **kw) for method, path, kw in requests]
    return seen, replies, fakes


async def test_a_chat_request_is_recorded_with_model_tokens_and_timings(app_client):
    seen, [reply], _ = await records_of(
        app_client, ("POST", "/v1/chat/completions", {"json": {**CHAT, "model": "a"}})
    )
    [record] = seen
    assert reply.headers["x-request-id"] == record.request_id and len(record.request_id) == 32
    assert (record.surface, record.requested, record.model, record.backend) == (
        "chat",
        "a",
        "alpha",
        "fake",
    )
    assert record.status == 200 and record.error_type is None
    assert (record.prompt_tokens, record.completion_tokens) == (7, 4)
    assert record.ttft is not None and record.duration >= record.ttft > 0
    assert len(record.inter_token) == 3  # four tokens, three gaps


async def test_a_streamed_answer_is_recorded_when_the_stream_ends(app_client):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    seen, [reply], _ = await records_of(
        app_client, ("POST", "/v1/chat/completions", {"json": body})
    )
    assert reply.status_code == 200
    [record] = seen
    assert record.completion_tokens == 4 and record.finished >= record.last_output


async def test_a_client_request_id_is_kept_and_echoed(app_client):
    headers = {"x-request-id": "trace-42"}
    seen, [reply], _ = await records_of(
        app_client, ("POST", "/v1/chat/completions", {"json": CHAT, "headers": headers})
    )
    assert reply.headers["x-request-id"] == "trace-42" == seen[0].request_id


async def test_an_unusable_request_id_is_replaced(app_client):
    headers = {"x-request-id": "bad id with spaces"}
    _, [reply], _ = await records_of(app_client, ("GET", "/v1/models", {"headers": headers}))
    assert reply.headers["x-request-id"] != "bad id with spaces"


async def test_failures_are_recorded_with_their_status_and_code(app_client):
    seen, replies, _ = await records_of(
        app_client,
        ("POST", "/v1/chat/completions", {"json": {**CHAT, "model": "nope"}}),
        ("POST", "/v1/chat/completions", {"json": CHAT}),
        api_keys=["sk-1"],
    )
    assert [r.status_code for r in replies] == [401, 401]
    assert [r.status for r in seen] == [401, 401]
    assert all(r.model is None for r in seen)


async def test_the_activity_counts_requests_in_flight_until_the_stream_closes():
    backend = FakeBackend("m", FakeScript(tokens=["a", "b"]))
    activity = BackendActivity()
    record = RequestRecord("id", "POST", "/v1/chat/completions", "chat")
    metered = MeteredBackend(backend, record, activity)
    from backends.requests import GenerationRequest

    stream = await metered.generate(GenerationRequest(model="m", prompt="x"))
    assert activity.in_flight("m") == 1
    events = [e async for e in stream]
    await stream.aclose()
    await stream.aclose()
    assert activity.in_flight("m") == 0 and activity.last_used("m") is not None
    assert record.completion_tokens == 2 and len(events) == 5


async def test_prompt_tokens_read_from_a_prefix_cache_are_recorded(app_client):
    scripts = {"alpha": FakeScript(prompt_tokens=9, cached_tokens=6)}
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    seen, _, _ = await records_of(
        app_client,
        ("POST", "/v1/chat/completions", {"json": CHAT}),
        ("POST", "/v1/chat/completions", {"json": stream}),
        scripts=scripts,
    )
    assert [(r.prompt_tokens, r.cached_tokens) for r in seen] == [(9, 6), (9, 6)]


async def test_a_backend_that_does_not_say_leaves_cached_tokens_unknown(app_client):
    seen, _, _ = await records_of(app_client, ("POST", "/v1/chat/completions", {"json": CHAT}))
    assert (seen[0].prompt_tokens, seen[0].cached_tokens) == (7, None)


async def test_a_relayed_answer_s_usage_is_read_with_its_cached_tokens():
    reply = (
        b'{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,'
        b'"prompt_tokens_details":{"cached_tokens":8}}}'
    )
    record = RequestRecord("r1", "POST", "/v1/chat/completions", "chat")
    metered = MeteredBackend(FakeRelay("up", reply), record, None)
    await metered.relay("chat/completions", ChatCompletionRequest(**CHAT))
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (12, 3, 8)


def test_the_proxy_has_only_what_the_backend_has():
    metered = MeteredBackend(FakeBackend("m"), None, None)
    assert not isinstance(metered, OpenAIRelay)
    assert not hasattr(metered, "embed")
    assert metered.model == "m" and metered.kind == "fake"


@pytest.mark.parametrize(
    ("path", "surface"),
    [
        ("/v1/chat/completions", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/api/chat", "ollama"),
        ("/", "tutorial"),
        ("/whatever", "other"),
    ],
)
def test_surface_labels_are_bounded(path, surface):
    assert surface_of_path(path) == surface
    assert surface_of_path("/", "GET") == surface_of_path("/static/chat.js", "GET") == "page"
