"""The Anthropic Messages stream contract (README, "Anthropic Messages API"): event order from
scripted core events, every event and the whole message valid against the anthropic SDK's own
types, stop reasons, the whole-answer fold, and the routes over FakeBackends through the real
SDK (AsyncAnthropic over ASGI): plain, streaming, count_tokens, errors in Anthropic's shape,
and a client that goes away stopping the generation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from backends import events as ev
from backends.errors import QueueFullError, UpstreamError
from gateway.anthropic_stream import (
    MessageEventBuilder,
    collect_message,
    message_events,
    tool_use_id,
)
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.fakes import FakeBackend, FakeScript, fake_factory
from tests.unit.conftest import fake_entry
from tests.unit.disconnect import call_then_disconnect

pytestmark = pytest.mark.anyio

SDK_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)

TEXT = [ev.Started(0), ev.TextDelta(0, "Hel"), ev.TextDelta(0, "lo"), ev.Finished(0, "stop")]
THINK_THEN_TEXT = [
    ev.Started(0),
    ev.ReasoningDelta(0, "Hmm"),
    ev.ReasoningDelta(0, "."),
    ev.TextDelta(0, "4"),
    ev.Finished(0, "stop"),
]
CALL = [
    ev.Started(0),
    ev.TextDelta(0, "Let me check."),
    ev.ToolCallDelta(0, 0, "call_a", "get_weather", ""),
    ev.ToolCallDelta(0, 0, None, None, '{"city": '),
    ev.ToolCallDelta(0, 0, None, None, '"Paris"}'),
    ev.ToolCallDelta(0, 1, "call_b", "get_time", ""),
    ev.ToolCallDelta(0, 1, None, None, "{}"),
    ev.Finished(0, "tool_calls"),
]
CUT = [ev.Started(0), ev.TextDelta(0, "a"), ev.Finished(0, "length")]
STOPPED = [ev.Started(0), ev.TextDelta(0, "Paris"), ev.Finished(0, "stop", "\n\n")]
NOTHING = [ev.Started(0), ev.Finished(0, "stop")]

START, STOP = "content_block_start", "content_block_stop"
DELTA, END = "content_block_delta", ["message_delta", "message_stop"]


async def scripted(events: list[ev.Event]) -> AsyncIterator[ev.Event]:
    for event in events:
        yield event


async def stream_of(events: list[ev.Event], usage: ev.Usage | None = None) -> list[Any]:
    script = [*events, usage or ev.Usage(5, 3)]
    return [e async for e in message_events(scripted(script), "claude-local")]


PING = "ping"


def types_of(events: list[Any]) -> list[str]:
    return [e.type for e in events]


@pytest.mark.parametrize(
    ("events", "types"),
    [
        # as Anthropic's stream: a ping after the first block's start, none without blocks
        (TEXT, ["message_start", START, PING, DELTA, DELTA, STOP, *END]),
        (
            THINK_THEN_TEXT,
            ["message_start", START, PING, DELTA, DELTA, DELTA, STOP, START, DELTA, STOP, *END],
        ),
        (
            CALL,
            [
                "message_start",
                *[START, PING, DELTA, STOP],
                *[START, DELTA, DELTA, STOP],
                *[START, DELTA, STOP],
                *END,
            ],
        ),
        (CUT, ["message_start", START, PING, DELTA, STOP, *END]),
        (NOTHING, ["message_start", *END]),
    ],
)
async def test_event_order(events, types):
    assert types_of(await stream_of(events)) == types


@pytest.mark.parametrize("events", [TEXT, THINK_THEN_TEXT, CALL, CUT, STOPPED, NOTHING])
async def test_every_event_is_valid_for_the_sdk(events):
    for event in await stream_of(events):
        if event.type != PING:  # the SDK skips pings before parsing (anthropic/_streaming.py)
            SDK_EVENT.validate_python(event.model_dump())


async def test_blocks_are_numbered_and_deltas_typed():
    events = await stream_of(THINK_THEN_TEXT)
    starts = [e for e in events if e.type == START]
    assert [(e.index, e.content_block.type) for e in starts] == [(0, "thinking"), (1, "text")]
    assert starts[0].content_block.model_dump() == {
        "type": "thinking",
        "thinking": "",
        "signature": "",
    }
    deltas = [e.delta.type for e in events if e.type == DELTA]
    assert deltas == ["thinking_delta", "thinking_delta", "signature_delta", "text_delta"]


async def test_tool_calls_are_tool_use_blocks_with_input_json_deltas():
    events = await stream_of(CALL)
    starts = [e.content_block for e in events if e.type == START]
    assert [b.type for b in starts] == ["text", "tool_use", "tool_use"]
    assert (starts[1].id, starts[1].name, starts[1].input) == ("toolu_a", "get_weather", {})
    pieces = [e.delta.partial_json for e in events if e.type == DELTA and e.index == 1]
    assert "".join(pieces) == '{"city": "Paris"}'
    delta = events[-2]
    assert delta.delta.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("events", "reason", "sequence"),
    [
        (TEXT, "end_turn", None),
        (CUT, "max_tokens", None),
        (STOPPED, "stop_sequence", "\n\n"),
        (CALL, "tool_use", None),
        ([ev.Started(0), ev.Finished(0, "content_filter")], "refusal", None),
    ],
)
async def test_stop_reasons(events, reason, sequence):
    stream = await stream_of(events, ev.Usage(11, 4))
    delta = stream[-2]
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == (reason, sequence)
    assert (delta.usage.input_tokens, delta.usage.output_tokens) == (11, 4)
    message = await collect_message(scripted([*events, ev.Usage(11, 4)]), "claude-local")
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


async def test_message_start_is_an_empty_message():
    start = (await stream_of(TEXT))[0]
    message = start.message
    assert message.id.startswith("msg_") and message.model == "claude-local"
    assert message.content == [] and message.stop_reason is None
    assert message.role == "assistant" and message.type == "message"


@pytest.mark.parametrize("events", [TEXT, THINK_THEN_TEXT, CALL, CUT, STOPPED, NOTHING])
async def test_the_whole_message_is_what_the_stream_builds(events):
    usage = ev.Usage(5, 3)
    message = await collect_message(scripted([*events, usage]), "claude-local")
    SDKMessage.model_validate(message.model_dump())
    builder = MessageEventBuilder("claude-local")
    for event in [*events, usage]:
        builder.feed(event)
    assert builder.message.content == message.content
    assert message.usage.model_dump() == {
        "input_tokens": 5,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def test_the_fold_has_thinking_text_and_tool_use_with_dict_input():
    message = await collect_message(scripted([*THINK_THEN_TEXT, ev.Usage(5, 3)]), "m")
    assert [b.model_dump() for b in message.content] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": ""},
        {"type": "text", "text": "4"},
    ]
    message = await collect_message(scripted([*CALL, ev.Usage(5, 3)]), "m")
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        ("toolu_a", "get_weather", {"city": "Paris"}),
        ("toolu_b", "get_time", {}),
    ]


def test_tool_use_ids_are_spelled_as_anthropic_spells_them():
    assert tool_use_id("call_0123abcd") == "toolu_0123abcd"  # an engine's id
    assert tool_use_id("chatcmpl-tool-9") == "chatcmpl-tool-9"  # an upstream's, kept
    fresh = tool_use_id(None)
    assert fresh.startswith("toolu_") and fresh != tool_use_id(None)


async def test_arguments_that_are_not_an_object_are_an_error():
    bad = [ev.Started(0), ev.ToolCallDelta(0, 0, "c", "f", "[1]"), ev.Finished(0, "tool_calls")]
    with pytest.raises(UpstreamError):
        await collect_message(scripted([*bad, ev.Usage(1, 1)]), "m")


async def test_a_call_max_tokens_cut_short_is_kept_with_what_parses_and_max_tokens():
    cut = [
        ev.Started(0),
        ev.ToolCallDelta(0, 0, "c", "f", '{"city": "Pa'),
        ev.Finished(0, "length"),
    ]
    message = await collect_message(scripted([*cut, ev.Usage(1, 4)]), "m")
    assert [(b.type, b.input) for b in message.content] == [("tool_use", {})]
    assert message.stop_reason == "max_tokens"


async def test_events_after_the_end_and_of_other_choices_are_ignored():
    builder = MessageEventBuilder("m")
    assert builder.feed(ev.TextDelta(1, "other choice")) == []
    for event in [*TEXT, ev.Usage(1, 2)]:
        builder.feed(event)
    assert builder.done and builder.feed(ev.TextDelta(0, "late")) == []


# -- the routes over FakeBackends, through the anthropic SDK ------------------------------

BODY = {"model": "alpha", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def served(
    scripts: dict[str, FakeScript] | None = None, api_keys: list[str] | None = None
) -> AsyncIterator[tuple[httpx2.AsyncClient, dict[str, FakeBackend]]]:
    """The real app over FakeBackends, and an httpx2 client on it over ASGI (the anthropic
    SDK speaks httpx2, not httpx)."""
    fakes: dict[str, FakeBackend] = {}
    config = GatewayConfig(
        server=ServerSettings(api_keys=api_keys or []),
        models=[fake_entry("alpha"), fake_entry("beta")],
    )
    app = create_app(config, backend_factory=fake_factory(scripts, fakes))
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, fakes


def sdk(client: httpx2.AsyncClient, **auth: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url="http://test", http_client=client, max_retries=0, **(auth or {"api_key": "k"})
    )


async def test_create_stream_and_count_tokens_through_the_sdk():
    async with served() as (client, fakes):
        claude = sdk(client)
        message = await claude.messages.create(**BODY)
        assert message.content[0].text == "Hello, world!"
        assert message.stop_reason == "end_turn" and message.model == "alpha"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 4)
        async with claude.messages.stream(**BODY) as stream:
            texts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(texts) == final.content[0].text == "Hello, world!"
        count = await claude.messages.count_tokens(
            model="alpha", messages=BODY["messages"], system="Be brief."
        )
        assert count.input_tokens == 7
        # a backend that cannot count: one token generated, the usage read, the stream closed
        assert fakes["alpha"].requests[-1].max_tokens == 1
        assert fakes["alpha"].tokens_generated == 4 + 4 + 1


async def test_max_tokens_is_max_tokens_stop_reason():
    async with served() as (client, fakes):
        message = await sdk(client).messages.create(**{**BODY, "max_tokens": 2})
    assert message.stop_reason == "max_tokens"
    assert fakes["alpha"].requests[-1].max_tokens == 2


async def test_the_stream_is_named_events():
    async with served() as (client, _):
        reply = await client.post("/v1/messages", json={**BODY, "stream": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = reply.text.strip().split("\n\n")
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    for frame in frames:
        name, data = frame.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


@pytest.mark.parametrize(
    ("body", "error", "kind"),
    [
        ({**BODY, "model": "nope"}, anthropic.NotFoundError, "not_found_error"),
        (
            {k: v for k, v in BODY.items() if k != "max_tokens"},
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
        (
            {**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
    ],
)
async def test_errors_are_in_anthropics_shape(body, error, kind):
    async with served() as (client, fakes):
        reply = await client.post("/v1/messages", json=body)
        with pytest.raises(error) as caught:  # the SDK's own post: past its argument checks
            await sdk(client).post("/v1/messages", body=body, cast_to=SDKMessage)
    assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == kind
    assert caught.value.status_code == reply.status_code
    assert all(not f.requests for f in fakes.values())


async def test_an_error_before_the_first_event_keeps_its_status():
    scripts = {"alpha": FakeScript(fail_before_first=QueueFullError("busy", retry_after=1))}
    async with served(scripts=scripts) as (client, _):
        with pytest.raises(anthropic.RateLimitError):
            await sdk(client).messages.create(**BODY, stream=True)


async def test_an_error_after_the_headers_is_an_error_event():
    boom = UpstreamError("the GPU fell over")
    scripts = {"alpha": FakeScript(fail_after_tokens=2, fail_with=boom)}
    async with served(scripts=scripts) as (client, _):
        reply = await client.post("/v1/messages", json={**BODY, "stream": True})
        assert reply.status_code == 200
        last = reply.text.strip().split("\n\n")[-1]
        assert last.startswith("event: error\n")
        body = json.loads(last.split("\n")[1].removeprefix("data: "))
        assert body == {"type": "error", "error": {"type": "api_error", "message": boom.message}}
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with sdk(client).messages.stream(**BODY) as stream:
                await stream.get_final_message()
        assert "the GPU fell over" in str(caught.value)


async def test_keys_as_x_api_key_or_bearer():
    async with served(api_keys=["sk-good"]) as (client, _):
        assert (await sdk(client, api_key="sk-good").messages.create(**BODY)).content
        bearer = sdk(client, auth_token="sk-good")  # Authorization: Bearer
        assert await bearer.messages.count_tokens(model="alpha", messages=BODY["messages"])
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await sdk(client).messages.create(**BODY)
        assert caught.value.body["error"]["type"] == "authentication_error"


async def test_a_client_that_goes_away_stops_the_generation():
    fake, at_return, _ = await call_then_disconnect(
        {**BODY, "max_tokens": 1000, "stream": True}, path="/v1/messages"
    )
    assert 0 < at_return < 100
    assert fake.tokens_generated == at_return
    assert fake.streams_closed == 1


async def test_cached_prompt_tokens_are_cache_reads_as_anthropic_counts_them():
    # Anthropic: input_tokens + cache_read_input_tokens is the whole prompt
    usage = ev.Usage(50, 3, cached_tokens=42)
    message = await collect_message(scripted([*TEXT, usage]), "m")
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (8, 42)
    builder = MessageEventBuilder("m")
    delta = [e for event in [*TEXT, usage] for e in builder.feed(event)][-2]
    assert delta.type == "message_delta"
    assert (delta.usage.input_tokens, delta.usage.cache_read_input_tokens) == (8, 42)
