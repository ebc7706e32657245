"""The OpenAI stream contract (README: Streams): frame order, shared ids, usage only when asked,
[DONE], errors in-stream."""

from __future__ import annotations

import json

import pytest

from backends import events as ev
from backends.errors import QueueFullError, UpstreamError
from gateway.openai_chat import ChunkBuilder
from tests.fakes import FakeScript

pytestmark = pytest.mark.anyio

BODY = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def parse_frames(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = [e for e in text.split("\n\n") if e]
    for event in events:
        assert event.startswith("data: "), event
    return [e.removeprefix("data: ") for e in events]


async def test_stream_frames_in_order_role_content_finish_done(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = parse_frames(reply.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(contents) == "Hello, world!"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_include_usage_adds_one_usage_chunk_before_done(app_client):
    body = {**BODY, "stream_options": {"include_usage": True}}
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=body)
    frames = parse_frames(reply.text)
    usage_chunk = json.loads(frames[-2])
    assert frames[-1] == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    finish = json.loads(frames[-3])
    assert finish["choices"][0]["finish_reason"] == "stop"


async def test_include_usage_false_sends_no_usage_chunk(app_client):
    body = {**BODY, "stream_options": {"include_usage": False}}
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=body)
    chunks = [json.loads(f) for f in parse_frames(reply.text)[:-1]]
    assert all(c["choices"] for c in chunks)


async def test_response_model_echoes_the_alias_the_client_sent(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json={**BODY, "model": "a"})
    chunks = [json.loads(f) for f in parse_frames(reply.text)[:-1]]
    assert {c["model"] for c in chunks} == {"a"}
    assert reply.headers["x-llmgate-model"] == "alpha"


async def test_error_before_first_chunk_keeps_its_status(app_client):
    scripts = {"alpha": FakeScript(fail_before_first=QueueFullError("busy", retry_after=2))}
    async with app_client(scripts=scripts) as (client, _):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "2"
    assert reply.json()["error"]["code"] == "queue_full"


async def test_error_after_headers_is_an_error_frame_then_done(app_client):
    scripts = {"alpha": FakeScript(fail_after_tokens=2, fail_with=UpstreamError("went away"))}
    async with app_client(scripts=scripts) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json=BODY)
    assert reply.status_code == 200
    frames = parse_frames(reply.text)
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])
    assert error == {
        "error": {
            "message": "went away",
            "type": "api_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert fakes["alpha"].streams_closed == 1


async def test_bug_mid_stream_is_a_generic_500_frame(app_client):
    scripts = {"alpha": FakeScript(fail_after_tokens=1, fail_with=RuntimeError("secret detail"))}
    async with app_client(scripts=scripts) as (client, _):
        reply = await client.post("/v1/chat/completions", json=BODY)
    error = json.loads(parse_frames(reply.text)[-2])["error"]
    assert error["code"] == "internal_error"
    assert "secret" not in error["message"]


async def test_n_choices_stream_each_index_with_its_own_finish(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json={**BODY, "n": 2})
    chunks = [json.loads(f) for f in parse_frames(reply.text)[:-1]]
    for index in (0, 1):
        mine = [c for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["choices"][0]["delta"]["role"] == "assistant"
        assert mine[-1]["choices"][0]["finish_reason"] == "stop"


async def test_non_streaming_completion_shape_and_usage_arithmetic(app_client):
    body = {**BODY, "stream": False, "max_tokens": 2}
    async with app_client() as (client, _):
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    data = reply.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "alpha"
    choice = data["choices"][0]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello,"},
        "finish_reason": "length",
        "logprobs": None,
    }
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 2


async def test_max_completion_tokens_wins_over_max_tokens(app_client):
    body = {**BODY, "stream": False, "max_tokens": 1, "max_completion_tokens": 3}
    async with app_client() as (client, fakes):
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.json()["usage"]["completion_tokens"] == 3
    assert fakes["alpha"].requests[0].max_tokens == 3


def test_the_usage_chunk_reports_cached_prompt_tokens_only_when_the_backend_counts_them():
    builder = ChunkBuilder("m")
    counted = builder.usage(ev.Usage(7, 4, cached_tokens=5)).model_dump()["usage"]
    assert counted == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 5},
    }
    unknown = builder.usage(ev.Usage(7, 4)).model_dump()["usage"]
    assert unknown == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
