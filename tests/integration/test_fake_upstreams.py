"""The fake upstreams against the official clients: FakeOllama with ``ollama``, FakeOpenAI with
``openai``, over real loopback sockets. Fidelity first (what the real servers send), then each fault
kind and the disconnect records."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest
from openai import OpenAI

from tests.fake_upstreams import (
    FakeModel,
    FakeOllama,
    FakeOpenAI,
    Fault,
    closed_port,
)
from tests.integration.conftest import ServerThread, wait_until

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Say hello to the fake please"}]  # 6 words
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
API_KEY = "sk-test-0123456789"


def _serve(app: FakeOllama | FakeOpenAI) -> Iterator[tuple[FakeOllama | FakeOpenAI, str]]:
    thread = ServerThread(app)  # type: ignore[arg-type]
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{thread.port}"
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[tuple[FakeOllama | FakeOpenAI, str]]:
    fake = FakeOllama(
        [
            "llama3:8b",
            FakeModel("tooly", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}),
            FakeModel("cached", report_counts=False),
            FakeModel("html", tokens=["<b>", "Tom & Jerry", "</b>"]),
            FakeModel("notools", supports_tools=False),
            FakeModel("long", tokens=[f" t{i}" for i in range(200)], token_delay=0.02),
            FakeModel("thinker", tokens=["4"], reasoning=["Two plus two ", "is four."]),
        ]
    )
    yield from _serve(fake)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[FakeOllama | FakeOpenAI, str]]:
    fake = FakeOpenAI(
        [
            "fake-model",
            FakeModel("tooly", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}),
            FakeModel("small", context_length=16),
            FakeModel("long", tokens=[f" t{i}" for i in range(200)], token_delay=0.02),
            FakeModel("thinker", tokens=["4"], reasoning=["Two plus two ", "is four."]),
            FakeModel(
                "thinker-new",
                tokens=["4"],
                reasoning=["Two plus two ", "is four."],
                reasoning_field="reasoning",
            ),
        ],
        api_key=API_KEY,
    )
    yield from _serve(fake)


@pytest.fixture
def fake_ollama(ollama_server: tuple[FakeOllama, str]) -> Iterator[FakeOllama]:
    fake = ollama_server[0]
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def fake_openai(openai_server: tuple[FakeOpenAI, str]) -> Iterator[FakeOpenAI]:
    fake = openai_server[0]
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def ollama_url(ollama_server: tuple[FakeOllama, str], fake_ollama: FakeOllama) -> str:
    return ollama_server[1]


@pytest.fixture
def openai_url(openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI) -> str:
    return openai_server[1]


@pytest.fixture
def oc(ollama_url: str) -> Iterator[ollama.Client]:
    with ollama.Client(host=ollama_url, timeout=5) as client:
        yield client


@pytest.fixture
def oai(openai_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{openai_url}/v1", api_key=API_KEY, max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def _lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line]


# ------------------------------------------------------------------------------------------
# FakeOllama, driven by the official ollama client


def test_ollama_stream_with_official_client(oc: ollama.Client, fake_ollama: FakeOllama) -> None:
    parts = list(oc.chat("llama3:8b", messages=HI, stream=True))
    assert "".join(p.message.content for p in parts) == "Hello from fake ollama."
    assert [p.done for p in parts] == [False] * 5 + [True]
    last = parts[-1]
    assert last.message.role == "assistant" and last.message.content == ""
    assert last.done_reason == "stop"
    assert last.eval_count == 5 and last.prompt_eval_count == 6
    assert last.total_duration >= last.load_duration + last.eval_duration > 0
    assert all(RFC3339_NANO.match(p.created_at) for p in parts)
    assert fake_ollama.chat_bodies[-1]["stream"] is True


def test_ollama_non_stream_with_official_client(oc: ollama.Client) -> None:
    reply = oc.chat("llama3:8b", messages=HI, stream=False)
    assert reply.message.content == "Hello from fake ollama."
    assert reply.done and reply.done_reason == "stop"
    assert reply.model == "llama3:8b"
    assert reply.prompt_eval_count == 6 and reply.eval_count == 5
    assert reply.prompt_eval_duration and reply.eval_duration and reply.load_duration
    # a missing tag means ":latest", and the model is echoed as it was asked for
    assert oc.chat("tooly:latest", messages=HI).model == "tooly:latest"
    with pytest.raises(ollama.ResponseError):
        oc.chat("llama3", messages=HI)  # "llama3:latest" is not "llama3:8b"


def test_ollama_stream_is_the_default_and_ndjson(http: httpx.Client, ollama_url: str) -> None:
    r = http.post(f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers.get("transfer-encoding") == "chunked"
    lines = _lines(r)
    assert len(lines) == 6
    assert list(lines[0]) == ["model", "created_at", "message", "done"]
    assert list(lines[-1]) == [
        "model",
        "created_at",
        "message",
        "done_reason",
        "done",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    non_stream = http.post(
        f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI, "stream": False}
    )
    assert non_stream.headers["content-type"] == "application/json; charset=utf-8"
    assert non_stream.json()["message"] == {
        "role": "assistant",
        "content": "Hello from fake ollama.",
    }


def test_ollama_records_options_and_num_predict_cuts(
    oc: ollama.Client, fake_ollama: FakeOllama
) -> None:
    options = {"num_predict": 2, "temperature": 0.2, "top_p": 0.9, "seed": 7, "num_ctx": 1024}
    parts = list(oc.chat("llama3:8b", messages=HI, stream=True, options=options, keep_alive="1m"))
    assert "".join(p.message.content for p in parts) == "Hello from"
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 2
    body = fake_ollama.chat_bodies[-1]
    assert body["options"] == options
    assert body["keep_alive"] == "1m"
    assert body["messages"] == HI
    # num_predict <= 0 means "no limit", like Ollama's runner
    reply = oc.chat("llama3:8b", messages=HI, options={"num_predict": -1})
    assert reply.done_reason == "stop" and reply.eval_count == 5


def test_ollama_stop_strings(oc: ollama.Client) -> None:
    reply = oc.chat("llama3:8b", messages=HI, options={"stop": [" fake"]})
    assert reply.message.content == "Hello from"
    assert reply.done_reason == "stop" and reply.eval_count == 3


def test_ollama_tool_calls_with_dict_arguments(oc: ollama.Client) -> None:
    reply = oc.chat("tooly", messages=HI, tools=[WEATHER_TOOL])
    assert reply.message.content == ""
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}
    assert reply.done_reason == "stop"

    parts = list(oc.chat("tooly", messages=HI, tools=[WEATHER_TOOL], stream=True))
    assert len(parts) == 2 and not parts[0].done and parts[1].done
    assert parts[0].message.tool_calls[0].function.arguments == {"city": "Paris"}

    # after the tool result it answers in text; without tools it never calls one
    follow = [
        *HI,
        {"role": "assistant", "content": "", "tool_calls": [reply.message.tool_calls[0]]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    assert oc.chat("tooly", messages=follow, tools=[WEATHER_TOOL]).message.tool_calls is None
    assert oc.chat("tooly", messages=HI).message.content == "Hello from fake ollama."


def test_ollama_tool_calls_raw_shape(http: httpx.Client, ollama_url: str) -> None:
    body = {"model": "tooly", "messages": HI, "tools": [WEATHER_TOOL], "stream": False}
    message = http.post(f"{ollama_url}/api/chat", json=body).json()["message"]
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }


def test_ollama_format_json_and_schema(oc: ollama.Client) -> None:
    assert json.loads(oc.chat("llama3:8b", messages=HI, format="json").message.content) == {
        "answer": "fake"
    }
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    parts = list(oc.chat("llama3:8b", messages=HI, format=schema, stream=True))
    assert json.loads("".join(p.message.content for p in parts)) == {"name": "fake", "age": 0}


def test_ollama_format_schema_with_refs_branches_and_hints(oc: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "unit": {"$ref": "#/$defs/Unit"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "$defs": {"Unit": {"enum": ["C", "F"]}},
    }
    reply = oc.chat("llama3:8b", messages=HI, format=schema)
    assert json.loads(reply.message.content) == {"unit": "C", "note": "fake", "tags": ["fake"]}

    # a forced-call schema: the scripted call's values fill it, and it stays text (no call)
    call = {
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"],
    }
    other = {**call, "properties": {**call["properties"], "name": {"const": "get_time"}}}
    reply = oc.chat("tooly", messages=HI, tools=[WEATHER_TOOL], format={"anyOf": [other, call]})
    assert reply.message.tool_calls is None
    assert json.loads(reply.message.content) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }


def test_ollama_think_streams_thinking_before_the_answer(oc: ollama.Client) -> None:
    parts = list(oc.chat("thinker", messages=HI, think=True, stream=True))
    thinking = [p.message.thinking for p in parts if p.message.thinking]
    assert thinking == ["Two plus two ", "is four."]
    assert all(p.message.content == "" for p in parts[: len(thinking)])
    assert "".join(p.message.content for p in parts) == "4"
    whole = oc.chat("thinker", messages=HI, think="low")
    assert (whole.message.thinking, whole.message.content) == ("Two plus two is four.", "4")
    assert whole.eval_count == 3  # thinking counts as generated tokens
    assert oc.chat("thinker", messages=HI, think=False).message.thinking is None


def test_ollama_think_errors(oc: ollama.Client, http: httpx.Client, ollama_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        oc.chat("llama3:8b", messages=HI, think=True)
    assert info.value.status_code == 400
    assert info.value.error == '"llama3:8b" does not support thinking'
    body = {"model": "thinker", "messages": HI, "think": "max"}
    reply = http.post(f"{ollama_url}/api/chat", json=body)
    assert reply.status_code == 400 and "invalid think value" in reply.json()["error"]


def test_ollama_show(oc: ollama.Client, http: httpx.Client, ollama_url: str) -> None:
    shown = oc.show("thinker")
    assert shown.capabilities == ["completion", "tools", "thinking"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 4096
    assert shown.details is not None and shown.details.family == "llama"
    assert oc.show("notools").capabilities == ["completion"]
    with pytest.raises(ollama.ResponseError) as info:
        oc.show("nope")
    assert info.value.status_code == 404 and info.value.error == "model 'nope' not found"
    reply = http.post(f"{ollama_url}/api/show", json={})
    assert (reply.status_code, reply.json()) == (400, {"error": "model is required"})


def test_ollama_list_version_root(oc: ollama.Client, http: httpx.Client, ollama_url: str) -> None:
    listed = oc.list()
    names = [m.model for m in listed.models]
    assert names[:2] == ["llama3:8b", "tooly"]
    first = listed.models[0]
    assert first.details.family == "llama" and first.details.format == "gguf"
    assert first.size > 0 and len(first.digest) == 64 and first.modified_at is not None
    raw = http.get(f"{ollama_url}/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] == "llama3:8b"
    assert http.get(f"{ollama_url}/api/version").json() == {"version": "0.12.3"}
    root = http.get(f"{ollama_url}/")
    assert root.text == "Ollama is running" and root.headers["content-type"].startswith("text/")
    assert http.head(f"{ollama_url}/").status_code == 200
    missing = http.get(f"{ollama_url}/api/nope")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert http.get(f"{ollama_url}/api/chat").status_code == 404  # gin: no 405


def test_ollama_ps_and_empty_messages_load_unload(
    oc: ollama.Client, http: httpx.Client, ollama_url: str
) -> None:
    r = http.post(f"{ollama_url}/api/chat", json={"model": "cached", "messages": []})
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["done_reason"] == "load" and r.json()["done"] is True
    assert "cached" in [m.model for m in oc.ps().models]
    r = http.post(f"{ollama_url}/api/chat", json={"model": "cached", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert "cached" not in [m.model for m in oc.ps().models]


def test_ollama_can_omit_counts(oc: ollama.Client, http: httpx.Client, ollama_url: str) -> None:
    last = list(oc.chat("cached", messages=HI, stream=True))[-1]
    assert last.done and last.prompt_eval_count is None and last.eval_count is None
    raw = http.post(
        f"{ollama_url}/api/chat", json={"model": "cached", "messages": HI, "stream": False}
    ).json()
    assert "eval_count" not in raw and "prompt_eval_count" not in raw
    assert raw["eval_duration"] > 0


def test_ollama_escapes_html_like_go(http: httpx.Client, ollama_url: str) -> None:
    r = http.post(f"{ollama_url}/api/chat", json={"model": "html", "messages": HI, "stream": False})
    assert b"\\u003cb\\u003eTom \\u0026 Jerry\\u003c/b\\u003e" in r.content
    assert r.json()["message"]["content"] == "<b>Tom & Jerry</b>"


def test_ollama_unknown_model_is_404(oc: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        oc.chat("nope", messages=HI)
    assert info.value.status_code == 404
    assert info.value.error == 'model "nope" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as info:
        list(oc.chat("nope", messages=HI, stream=True))
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        (b"", 400, "missing request body"),
        (b'{"messages": []}', 400, "model is required"),
        (b'{"model": "llama3:8b", ', 400, "unexpected EOF"),
        (b"{model: 1}", 400, "invalid character 'm' looking for beginning of object key string"),
        (b"nonsense", 400, "invalid character 'o' in literal null (expecting 'u')"),
        (b"hello", 400, "invalid character 'h' looking for beginning of value"),
        (b"[1]", 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        (b'{"model": "x", "keep_alive": "300"}', 400, 'time: missing unit in duration "300"'),
        (
            b'{"model": "llama3:8b",'
            b' "messages": [{"role": "user", "content": [{"type": "text"}]}]}',
            400,
            "json: cannot unmarshal array into Go struct field ChatRequest.messages.content "
            "of type string",
        ),
        (  # OpenAI sends tool-call arguments as a JSON string; Ollama wants an object
            b'{"model": "x", "messages": [{"role": "assistant", "content": "",'
            b' "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]}',
            400,
            "json: cannot unmarshal string into Go struct field "
            "ChatRequest.messages.tool_calls.function.arguments of type "
            "api.ToolCallFunctionArguments",
        ),
        (
            b'{"model": "llama3:8b", "stream": "yes"}',
            400,
            "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
        ),
        (
            b'{"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}],'
            b' "options": {"stop": "x"}}',
            500,
            'option "stop" must be of type array',
        ),
        (
            b'{"model": "notools", "messages": [{"role": "user", "content": "hi"}],'
            b' "tools": [{"type": "function", "function": {"name": "f"}}]}',
            400,
            '"notools" does not support tools',
        ),
    ],
)
def test_ollama_request_errors(
    http: httpx.Client, ollama_url: str, content: bytes, status: int, error: str
) -> None:
    r = http.post(f"{ollama_url}/api/chat", content=content)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_ollama_trailing_garbage_is_ignored_like_gin(http: httpx.Client, ollama_url: str) -> None:
    content = b'{"model": "llama3:8b", "messages": [], "stream": false} trailing'
    assert http.post(f"{ollama_url}/api/chat", content=content).json()["done_reason"] == "load"


def test_ollama_context_overflow_nests_a_json_string(oc: ollama.Client) -> None:
    words = " ".join(["word"] * 40)
    with pytest.raises(ollama.ResponseError) as info:
        oc._request_raw(  # the client has no `truncate` argument; send it raw
            "POST",
            "/api/chat",
            json={
                "model": "llama3:8b",
                "messages": [{"role": "user", "content": words}],
                "options": {"num_ctx": 32},
                "truncate": False,
                "stream": False,
            },
        )
    assert info.value.status_code == 400
    inner = json.loads(info.value.error)["error"]
    assert inner == {
        "code": 400,
        "message": "request (40 tokens) exceeds the available context size (32 tokens), "
        "try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 40,
        "n_ctx": 32,
    }
    # truncate left at its default: Ollama truncates silently
    reply = oc.chat(
        "llama3:8b", messages=[{"role": "user", "content": words}], options={"num_ctx": 32}
    )
    assert reply.prompt_eval_count == 32


# ------------------------------------------------------------------------------------------
# FakeOpenAI, driven by the official openai SDK


def test_openai_non_stream(oai: OpenAI, fake_openai: FakeOpenAI) -> None:
    reply = oai.chat.completions.create(model="fake-model", messages=HI, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == "fake-model"
    assert reply.choices[0].message.content == "Hello from fake openai."
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 5)
    assert reply.usage.total_tokens == 11
    request = fake_openai.requests[-1]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["temperature"] == 0 and fake_openai.chat_bodies == [request.body]


def test_openai_stream_with_usage(oai: OpenAI, http: httpx.Client, openai_url: str) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="fake-model",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == (
        "Hello from fake openai."
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1

    r = http.post(
        f"{openai_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "fake-model", "messages": HI, "stream": True},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" not in p for p in payloads)  # no usage without include_usage
    assert payloads[-1]["choices"][0]["delta"] == {}


def test_openai_max_tokens_and_stop(oai: OpenAI) -> None:
    reply = oai.chat.completions.create(model="fake-model", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content == "Hello from"
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 2
    reply = oai.chat.completions.create(model="fake-model", messages=HI, stop=" openai")
    assert reply.choices[0].message.content == "Hello from fake"
    assert reply.choices[0].finish_reason == "stop"


def test_openai_tool_calls(oai: OpenAI) -> None:
    reply = oai.chat.completions.create(model="tooly", messages=HI, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(
        oai.chat.completions.create(model="tooly", messages=HI, tools=[WEATHER_TOOL], stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].tool_calls[0].function.name == "get_weather"
    arguments = "".join(d.tool_calls[0].function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    text = oai.chat.completions.create(
        model="tooly", messages=HI, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert text.choices[0].message.content == "Hello from fake openai."


TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("model", "tool_choice", "call"),
    [
        ("fake-model", "required", ("get_weather", {"city": "fake"})),
        (
            "fake-model",
            {"type": "function", "function": {"name": "get_time"}},
            ("get_time", {"zone": "fake"}),
        ),
        ("tooly", "required", ("get_weather", {"city": "Paris"})),
        (
            "tooly",
            {"type": "function", "function": {"name": "get_time"}},
            ("get_time", {"zone": "fake"}),
        ),
    ],
)
def test_openai_forced_tool_choice_always_calls(
    oai: OpenAI, model: str, tool_choice: object, call: tuple[str, dict]
) -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    reply = oai.chat.completions.create(
        model=model,
        messages=HI,
        tools=tools,
        tool_choice=tool_choice,  # type: ignore[arg-type]
    )
    made = reply.choices[0].message.tool_calls[0].function
    assert (made.name, json.loads(made.arguments)) == call
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"tool_choice": "required"}, "only allowed when 'tools' are specified"),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "x"}},
            },
            "no function named 'x'",
        ),
    ],
)
def test_openai_tool_choice_errors(oai: OpenAI, fields: dict, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="fake-model", messages=HI, **fields)
    assert info.value.param == "tool_choice" and needle in info.value.message


@pytest.mark.parametrize(
    ("model", "field"), [("thinker", "reasoning_content"), ("thinker-new", "reasoning")]
)
def test_openai_reasoning_under_the_models_field(oai: OpenAI, model: str, field: str) -> None:
    chunks = list(oai.chat.completions.create(model=model, messages=HI, stream=True))
    deltas = [(c.choices[0].delta.model_extra or {}) for c in chunks if c.choices]
    other = "reasoning" if field == "reasoning_content" else "reasoning_content"
    assert "".join(d.get(field) or "" for d in deltas) == "Two plus two is four."
    assert not any(other in d for d in deltas)
    message = oai.chat.completions.create(model=model, messages=HI).choices[0].message
    assert (message.model_extra or {})[field] == "Two plus two is four."
    assert other not in (message.model_extra or {}) and message.content == "4"


def test_openai_response_format(oai: OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="fake-model",
        messages=HI,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
            },
        },
    )
    assert json.loads(reply.choices[0].message.content) == {"ok": True}


def test_openai_models_and_health(oai: OpenAI, http: httpx.Client, openai_url: str) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == ["fake-model", "tooly", "small", "long", "thinker", "thinker-new"]
    assert http.get(f"{openai_url}/health").status_code == 200  # no key needed
    assert http.get(f"{openai_url}/v1/models").status_code == 401
    missing = http.get(f"{openai_url}/v1/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})


def test_openai_auth_errors(openai_url: str) -> None:
    wrong = OpenAI(base_url=f"{openai_url}/v1", api_key="sk-wrong-key-123", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model="fake-model", messages=HI)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with httpx.Client() as http:
        r = http.post(f"{openai_url}/v1/chat/completions", json={"model": "fake-model"})
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("You didn't provide an API key")


def test_openai_errors(oai: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        oai.chat.completions.create(model="nope", messages=HI)
    assert not_found.value.body == {
        "message": "The model `nope` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="fake-model", messages=HI, temperature=3)
    assert bad.value.param == "temperature" and bad.value.code == "decimal_above_max_value"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="fake-model", messages=HI, max_tokens=0)
    assert bad.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(
            model="fake-model", messages=HI, stream_options={"include_usage": True}
        )
    assert bad.value.param == "stream_options"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="small", messages=HI, max_tokens=100)
    assert bad.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="fake-model", messages=[])
    assert bad.value.param == "messages"


# ------------------------------------------------------------------------------------------
# faults


def test_closed_port_refuses() -> None:
    port = closed_port()
    with httpx.Client() as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/")
    with ollama.Client(host=f"http://127.0.0.1:{port}") as c, pytest.raises(ConnectionError):
        c.list()


def test_fault_status_ollama(oc: ollama.Client, fake_ollama: FakeOllama, http, ollama_url) -> None:
    fake_ollama.faults.append(Fault("status", status=503))
    with pytest.raises(ollama.ResponseError) as info:
        list(oc.chat("llama3:8b", messages=HI, stream=True))
    assert info.value.status_code == 503 and "server busy" in info.value.error
    assert oc.chat("llama3:8b", messages=HI).done  # consumed: the next request is fine

    fake_ollama.faults.append(Fault("status", status=429, message="slow down"))
    r = http.post(f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI})
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (429, {"error": "slow down"}, "1")


def test_fault_status_openai(oai: OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault("status", status=429, retry_after="2"))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="fake-model", messages=HI)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    fake_openai.faults.append(Fault("status", status=500))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="fake-model", messages=HI, stream=True)


def test_fault_sticky_and_path(
    oai: OpenAI, fake_openai: FakeOpenAI, http: httpx.Client, openai_url: str
) -> None:
    sticky = Fault("status", status=503, sticky=True)
    fake_openai.faults.append(sticky)
    fake_openai.faults.append(Fault("status", status=503, path="/health"))
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="fake-model", messages=HI)
    fake_openai.faults.remove(sticky)
    assert oai.chat.completions.create(model="fake-model", messages=HI).choices
    assert http.get(f"{openai_url}/health").status_code == 503
    assert http.get(f"{openai_url}/health").status_code == 200
    assert [r.fault is not None for r in fake_openai.requests] == [True, True, False, True, False]


def test_fault_hang_before_headers(
    fake_ollama: FakeOllama, http: httpx.Client, ollama_url: str
) -> None:
    fake_ollama.faults.append(Fault("hang_before_headers", seconds=0.15))
    started = time.monotonic()
    r = http.post(f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI})
    assert r.status_code == 200 and len(_lines(r)) == 6
    assert time.monotonic() - started >= 0.15

    # a client that gives up during the hang is recorded as a disconnect with nothing sent
    fake_ollama.faults.append(Fault("hang_before_headers", seconds=30))
    with httpx.Client(timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI})
    gave_up = time.monotonic()
    assert wait_until(lambda: fake_ollama.disconnects, timeout=1)
    (gone,) = fake_ollama.disconnects
    assert gone.sent == 0 and gone.at - gave_up < 0.5
    assert wait_until(lambda: fake_ollama.in_flight == 0, timeout=1)


def test_faults_on_other_endpoints_and_error_replies(
    fake_ollama: FakeOllama, http: httpx.Client, ollama_url: str
) -> None:
    fake_ollama.faults.append(Fault("hang_before_headers", seconds=0.1, path="/api/version"))
    fake_ollama.faults.append(Fault("die_mid_stream", path="/api/tags"))
    fake_ollama.faults.append(Fault("hang_before_headers", seconds=0.1))
    started = time.monotonic()
    assert http.get(f"{ollama_url}/api/version").json() == {"version": "0.12.3"}
    assert time.monotonic() - started >= 0.1
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(f"{ollama_url}/api/tags")
    started = time.monotonic()
    r = http.post(f"{ollama_url}/api/chat", json={"model": "nope", "messages": HI})
    assert r.status_code == 404 and time.monotonic() - started >= 0.1
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert fake_ollama.faults == []


def test_fault_die_mid_stream_ollama(oc: ollama.Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.faults.append(Fault("die_mid_stream", after=2))
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        got.extend(p.message.content for p in oc.chat("llama3:8b", messages=HI, stream=True))
    assert got == ["Hello", " from"]
    fake_ollama.faults.append(Fault("die_mid_stream"))
    with pytest.raises(httpx.RemoteProtocolError):
        oc.chat("llama3:8b", messages=HI, stream=False)
    assert fake_ollama.disconnects == []  # the server hung up, not the client
    assert oc.chat("llama3:8b", messages=HI).done


def test_fault_die_mid_stream_openai(oai: OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault("die_mid_stream", after=3))
    got = []
    with pytest.raises(openai.APIConnectionError) as info:  # the SDK wraps the protocol error
        got.extend(oai.chat.completions.create(model="fake-model", messages=HI, stream=True))
    assert "incomplete chunked read" in str(info.value.__cause__)
    assert [c.choices[0].delta.content for c in got] == ["", "Hello", " from"]


def test_fault_slow_chunks(fake_ollama: FakeOllama, http: httpx.Client, ollama_url: str) -> None:
    fake_ollama.faults.append(Fault("slow_chunks", seconds=0.05))
    stamps = []
    body = {"model": "llama3:8b", "messages": HI}
    with http.stream("POST", f"{ollama_url}/api/chat", json=body) as r:
        for line in r.iter_lines():
            if line:
                stamps.append(time.monotonic())
    assert len(stamps) == 6
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.04


def test_fault_error_line_ollama(
    oc: ollama.Client, fake_ollama: FakeOllama, http: httpx.Client, ollama_url: str
) -> None:
    fake_ollama.faults.append(Fault("error_line", after=2, message="boom"))
    r = http.post(f"{ollama_url}/api/chat", json={"model": "llama3:8b", "messages": HI})
    assert r.status_code == 200
    lines = _lines(r)
    assert len(lines) == 3 and lines[-1] == {"error": "boom"}

    fake_ollama.faults.append(Fault("error_line", after=1))
    got = []
    with pytest.raises(ollama.ResponseError) as info:
        got.extend(oc.chat("llama3:8b", messages=HI, stream=True))
    assert len(got) == 1 and "unexpected EOF" in info.value.error

    fake_ollama.faults.append(Fault("error_line", message="boom"))
    with pytest.raises(ollama.ResponseError) as info:
        oc.chat("llama3:8b", messages=HI, stream=False)
    assert (info.value.status_code, info.value.error) == (500, "boom")


def test_fault_error_line_openai(oai: OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault("error_line", after=2, message="engine died"))
    got = []
    with pytest.raises(openai.APIError, match="engine died"):
        got.extend(oai.chat.completions.create(model="fake-model", messages=HI, stream=True))
    assert len(got) == 2


# ------------------------------------------------------------------------------------------
# disconnect records


@pytest.mark.parametrize("which", ["ollama", "openai"])
def test_disconnect_is_recorded_promptly(
    which: str, fake_ollama: FakeOllama, fake_openai: FakeOpenAI, ollama_url: str, openai_url: str
) -> None:
    fake: FakeOllama | FakeOpenAI = fake_ollama if which == "ollama" else fake_openai
    url = f"{ollama_url}/api/chat" if which == "ollama" else f"{openai_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "long", "messages": HI, "stream": True}
    with httpx.Client(timeout=5, headers=headers) as http:
        with http.stream("POST", url, json=body) as r:
            lines = r.iter_lines()
            assert next(lines)
            assert next(lines) is not None
            assert fake.in_flight == 1
        closed = time.monotonic()
    assert wait_until(lambda: fake.disconnects, timeout=1)
    (gone,) = fake.disconnects
    assert gone.model == "long" and gone.path == fake.chat_path
    assert 0 < gone.sent < 200
    assert gone.at - closed < 0.5
    assert wait_until(lambda: fake.in_flight == 0, timeout=1)


def test_finished_responses_are_not_disconnects(
    oc: ollama.Client, oai: OpenAI, fake_ollama: FakeOllama, fake_openai: FakeOpenAI
) -> None:
    list(oc.chat("llama3:8b", messages=HI, stream=True))
    oc.chat("llama3:8b", messages=HI)
    list(oai.chat.completions.create(model="fake-model", messages=HI, stream=True))
    oai.chat.completions.create(model="fake-model", messages=HI)
    time.sleep(0.05)
    assert fake_ollama.disconnects == [] and fake_openai.disconnects == []
    assert fake_ollama.in_flight == 0 and fake_openai.in_flight == 0
