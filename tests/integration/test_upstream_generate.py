"""The upstream backends' ``generate`` path (what a non-OpenAI surface uses): a core request
becomes the upstream's body on a real socket, its replies become events, and a stream closed
unread still gives its connection back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from backends.events import Event, Finished, Started, TextDelta, ToolCallDelta, Usage
from backends.requests import (
    GenerationRequest,
    Message,
    OutputConstraint,
    TextPart,
    Tool,
    ToolChoice,
)
from backends.upstream.ollama import OllamaBackend
from backends.upstream.openai_compat import OpenAICompatBackend
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(
        [
            "fake-model",
            FakeModel("tooly", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}),
            FakeModel("long", tokens=[f" t{i}" for i in range(200)], token_delay=0.02),
        ]
    )
    thread = ServerThread(fake)  # type: ignore[arg-type]
    thread.start()
    yield fake, f"http://127.0.0.1:{thread.port}/v1"
    thread.stop()


def run(url: str, remote: str, request: GenerationRequest) -> tuple[list[Event], str | None]:
    async def go() -> tuple[list[Event], str | None]:
        settings = OpenAICompatSettings(
            name="m", backend="openai", base_url=url, upstream_model=remote
        )
        backend = OpenAICompatBackend(settings)
        try:
            stream = await backend.generate(request)
            events = [event async for event in stream]
            return events, stream.replica
        finally:
            await backend.aclose()

    return asyncio.run(go())


def ask(text: str, **fields: object) -> GenerationRequest:
    return GenerationRequest(model="m", messages=(Message("user", (TextPart(text),)),), **fields)  # type: ignore[arg-type]


def test_text_answer_becomes_events_in_order(upstream):
    fake, url = upstream
    events, replica = run(url, "fake-model", ask("Say hello to the fake please", max_tokens=3))
    assert events[0] == Started(0)
    assert isinstance(events[-2], Finished) and events[-2].reason == "length"
    usage = events[-1]
    assert isinstance(usage, Usage) and usage.completion_tokens == 3 and usage.prompt_tokens > 0
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text and len(text.split()) == 3
    assert replica == url
    sent = fake.chat_bodies[-1]
    assert sent["model"] == "fake-model" and sent["max_tokens"] == 3
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_raw_prompt_goes_to_the_completions_endpoint(upstream):
    fake, url = upstream
    request = GenerationRequest(model="m", prompt="Once upon", max_tokens=2, n=2, stop=("zz",))
    events, _ = run(url, "fake-model", request)
    assert [e for e in events if isinstance(e, Started)] == [Started(0), Started(1)]
    texts = [
        "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == i) for i in (0, 1)
    ]
    assert texts[0] == texts[1] and len(texts[0].split()) == 2
    assert isinstance(events[-1], Usage) and events[-1].completion_tokens == 4
    [sent] = [r for r in fake.requests if r.path == "/v1/completions"][-1:]
    assert sent.body["prompt"] == "Once upon" and "messages" not in sent.body
    assert sent.body["n"] == 2 and sent.body["stop"] == ["zz"] and sent.body["max_tokens"] == 2


def test_tool_calls_become_tool_call_deltas(upstream):
    fake, url = upstream
    request = ask(
        "weather in Paris?", tools=(WEATHER,), tool_choice=ToolChoice("function", "get_weather")
    )
    events, _ = run(url, "tooly", request)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].id and calls[0].name == "get_weather" and calls[0].call == 0
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Paris"}
    assert Finished(0, "tool_calls") in events
    sent = fake.chat_bodies[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_a_json_schema_constraint_is_sent_as_response_format(upstream):
    fake, url = upstream
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = ask("answer in JSON", constraint=OutputConstraint("json_schema", schema, name="a"))
    events, _ = run(url, "fake-model", request)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert isinstance(json.loads(text), dict)
    sent = fake.chat_bodies[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_a_stream_closed_before_it_is_read_releases_the_upstream(upstream):
    _, url = upstream

    async def go() -> int:
        settings = OpenAICompatSettings(
            name="m", backend="openai", base_url=url, upstream_model="long"
        )
        backend = OpenAICompatBackend(settings)
        try:
            stream = await backend.generate(ask("Say hello"))
            assert backend.client.in_flight == 1
            await stream.aclose()
            return backend.client.in_flight
        finally:
            await backend.aclose()

    assert asyncio.run(go()) == 0


def test_an_ollama_stream_closed_before_it_is_read_releases_the_upstream():
    fake = FakeOllama([FakeModel("long", tokens=[f" t{i}" for i in range(200)], token_delay=0.02)])
    thread = ServerThread(fake)  # type: ignore[arg-type]
    thread.start()

    async def go() -> tuple[int, int, list[Event]]:
        settings = OllamaSettings(
            name="m",
            backend="ollama",
            base_url=f"http://127.0.0.1:{thread.port}",
            upstream_model="long",
        )
        backend = OllamaBackend(settings)
        try:
            unread = await backend.generate(ask("Say hello", max_tokens=2))
            held = backend.client.in_flight
            await unread.aclose()
            read = await backend.generate(ask("Say hello", max_tokens=2))
            events = [event async for event in read]
            return held, backend.client.in_flight, events
        finally:
            await backend.aclose()

    try:
        held, after, events = asyncio.run(go())
    finally:
        thread.stop()
    assert (held, after) == (1, 0)
    assert events[0] == Started(0) and events[-1] == Usage(events[-1].prompt_tokens, 2)
