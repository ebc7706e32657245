"""Tools, structured output, reasoning and capabilities through the upstream backends: the real
gateway on a real port in front of FakeOllama (native /api/chat) and FakeOpenAI (the relay),
driven the way clients use them — the openai SDK (plain, its stream helper, ``parse``) and
LangChain (``bind_tools`` with a tool loop, ``with_structured_output``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel

from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI, closed_port
from tests.integration.conftest import RunningServer, ServerThread

pytestmark = pytest.mark.integration

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PARIS = {"city": "Paris", "unit": "C"}
SCRIPTED_CALL = {"name": "get_weather", "arguments": PARIS}
WEATHER_REPLY = {"city": "Paris", "temperature": 21}


def function_tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} for a city",
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
            },
        },
    }


WEATHER_TOOL = function_tool(
    "get_weather", {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}}
)
TIME_TOOL = function_tool("get_time", {"city": {"type": "string"}})


class Weather(BaseModel):
    city: str
    temperature: int


class GetWeather(BaseModel):
    """Weather for a city."""

    city: str


@tool
def get_weather(city: str, unit: str) -> str:
    """Weather for a city, in unit C or F."""
    return f"21 degrees {unit} and sunny in {city}"


# The same three kinds of model behind each upstream: one that answers text (and JSON that fits
# a schema), one scripted to call get_weather, one that thinks first.
OLLAMA = {"plain": "ollama-plain", "tooly": "ollama-tooly", "thinker": "ollama-thinker"}
RELAY = {"plain": "relay-plain", "tooly": "relay-tooly", "thinker": "relay-thinker"}
BOTH = pytest.mark.parametrize("models", [OLLAMA, RELAY], ids=["ollama", "relay"])


@pytest.fixture(scope="module")
def ollama() -> Iterator[tuple[FakeOllama, str]]:
    fake = FakeOllama(
        [
            FakeModel("llama3:8b", json_reply=WEATHER_REPLY, context_length=8192),
            FakeModel("tooly:1b", tool_call=SCRIPTED_CALL),
            FakeModel("qwen3:8b", tokens=["4"], reasoning=["Two plus two ", "is four."]),
            FakeModel("notools:1b", supports_tools=False),
        ]
    )
    thread = ServerThread(fake)  # type: ignore[arg-type]
    thread.start()
    yield fake, f"http://127.0.0.1:{thread.port}"
    thread.stop()


@pytest.fixture(scope="module")
def vllm() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(
        [
            FakeModel("org/plain", json_reply=WEATHER_REPLY, context_length=32768),
            FakeModel("org/tooly", tool_call=SCRIPTED_CALL),
            FakeModel("org/thinker", tokens=["4"], reasoning=["Two plus two ", "is four."]),
            FakeModel(
                "org/thinker-new",
                tokens=["4"],
                reasoning=["Two plus two ", "is four."],
                reasoning_field="reasoning",
            ),
        ]
    )
    thread = ServerThread(fake)  # type: ignore[arg-type]
    thread.start()
    yield fake, f"http://127.0.0.1:{thread.port}/v1"
    thread.stop()


@pytest.fixture(scope="module")
def gateway(ollama, vllm) -> Iterator[RunningServer]:
    common: dict[str, Any] = {"health_check_interval": 0}

    def on_ollama(name: str, remote: str, **extra: Any) -> OllamaSettings:
        return OllamaSettings(
            name=name,
            backend="ollama",
            base_url=ollama[1],
            upstream_model=remote,
            **common,
            **extra,
        )

    def relayed(name: str, remote: str) -> OpenAICompatSettings:
        return OpenAICompatSettings(
            name=name, backend="openai", base_url=vllm[1], upstream_model=remote, **common
        )

    models = [
        on_ollama("ollama-plain", "llama3:8b"),
        on_ollama("ollama-tooly", "tooly:1b"),
        on_ollama("ollama-thinker", "qwen3:8b"),
        on_ollama("ollama-notools", "notools:1b", num_ctx=2048),
        OllamaSettings(
            name="ollama-down",
            backend="ollama",
            base_url=f"http://127.0.0.1:{closed_port()}",
            **common,
        ),
        relayed("relay-plain", "org/plain"),
        relayed("relay-tooly", "org/tooly"),
        relayed("relay-thinker", "org/thinker"),
        relayed("relay-thinker-new", "org/thinker-new"),
        relayed("relay-ghost", "org/not-served"),
    ]
    app = create_app(GatewayConfig(models=models))
    thread = ServerThread(app)
    thread.start()
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture(autouse=True)
def clean_fakes(ollama, vllm) -> None:
    ollama[0].reset()
    vllm[0].reset()


@pytest.fixture
def client(gateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.v1, api_key="x", max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture
def http(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as c:
        yield c


def llm(gateway: RunningServer, model: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=gateway.v1, api_key="x", model=model, max_retries=0, **options)


def sent_to(ollama, vllm, models: dict[str, str]) -> dict[str, Any]:
    """The last chat body the upstream behind ``models`` received."""
    fake = ollama[0] if models is OLLAMA else vllm[0]
    return fake.chat_bodies[-1]


def sse_chunks(reply: httpx.Response) -> list[dict[str, Any]]:
    data = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def tool_call_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        call
        for chunk in chunks
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls") or []
    ]


def assert_openai_error(reply: httpx.Response, param: str | None) -> dict[str, Any]:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    return error


# -- tool calls with the openai SDK --------------------------------------------------------------


@BOTH
def test_a_tool_call_and_its_result_round_trip(client, ollama, vllm, models):
    reply = client.chat.completions.create(
        model=models["tooly"], messages=ASK, tools=[WEATHER_TOOL]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == PARIS

    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"},
    ]
    final = client.chat.completions.create(
        model=models["tooly"], messages=history, tools=[WEATHER_TOOL]
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    sent = sent_to(ollama, vllm, models)["messages"]
    if models is OLLAMA:
        assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": PARIS}}]
        assert sent[2] == {
            "role": "tool",
            "content": "21 degrees and sunny",
            "tool_name": "get_weather",
        }
    else:
        assert sent[1]["tool_calls"][0]["id"] == call.id
        assert sent[2]["tool_call_id"] == call.id


@BOTH
def test_a_streamed_tool_call_assembles_with_the_sdk_stream_helper(client, models):
    with client.chat.completions.stream(
        model=models["tooly"], messages=ASK, tools=[WEATHER_TOOL]
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.name, json.loads(e.arguments)) for e in done] == [("get_weather", PARIS)]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == PARIS


@BOTH
def test_a_streamed_tool_call_has_the_openai_delta_shape(http, models):
    body = {"model": models["tooly"], "messages": ASK, "tools": [WEATHER_TOOL], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        chunks = sse_chunks(reply)
    calls = tool_call_deltas(chunks)
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather"
    assert all("id" not in c and "name" not in c.get("function", {}) for c in rest)
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments) == PARIS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@BOTH
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ("required", "get_weather"),
    ],
    ids=["named", "required"],
)
def test_a_forced_tool_call_is_made(client, ollama, vllm, models, stream, tool_choice, name):
    """The plain model answers text when it may; forced, it calls (Ollama: through format)."""
    tools = [WEATHER_TOOL, TIME_TOOL]
    fields = {"model": models["plain"], "messages": ASK, "tools": tools, "tool_choice": tool_choice}
    if stream:
        with client.chat.completions.stream(**fields) as events:
            reply = events.get_final_completion()
    else:
        reply = client.chat.completions.create(**fields)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == name
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    sent = sent_to(ollama, vllm, models)
    assert sent["tools"] == tools
    if models is OLLAMA:
        assert "tool_choice" not in sent
        schema = sent["format"]
        branches = schema.get("anyOf", [schema])
        assert [b["properties"]["name"]["const"] for b in branches] == (
            ["get_time"] if name == "get_time" else ["get_weather", "get_time"]
        )
    else:
        assert sent["tool_choice"] == tool_choice


@BOTH
def test_a_forced_call_keeps_the_scripted_arguments_of_a_model_that_calls(client, models):
    reply = client.chat.completions.create(
        model=models["tooly"],
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == PARIS


@BOTH
def test_tool_choice_none_answers_text(client, ollama, vllm, models):
    reply = client.chat.completions.create(
        model=models["tooly"], messages=ASK, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content
    assert not reply.choices[0].message.tool_calls


def test_relay_passes_parallel_tool_calls_and_tool_fields_as_sent(client, vllm):
    strict_tool = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}
    client.chat.completions.create(
        model="relay-tooly",
        messages=ASK,
        tools=[strict_tool],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    sent = vllm[0].chat_bodies[-1]
    assert sent["tools"] == [strict_tool]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False


# -- structured output with the openai SDK -------------------------------------------------------


@BOTH
def test_parse_with_a_pydantic_response_format(client, ollama, vllm, models):
    reply = client.chat.completions.parse(
        model=models["plain"], messages=ASK, response_format=Weather
    )
    assert reply.choices[0].message.parsed == Weather(**WEATHER_REPLY)
    sent = sent_to(ollama, vllm, models)
    if models is OLLAMA:
        assert sent["format"]["properties"].keys() == {"city", "temperature"}
    else:
        assert sent["response_format"]["json_schema"]["strict"] is True


@BOTH
def test_parse_with_a_pydantic_function_tool(client, models):
    reply = client.chat.completions.parse(
        model=models["plain"],
        messages=ASK,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
    )
    call = reply.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)


@BOTH
def test_json_object_answers_json(client, models):
    reply = client.chat.completions.create(
        model=models["plain"], messages=ASK, response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content) == WEATHER_REPLY


# -- LangChain -----------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_langchain_tool_loop(gateway, models, streaming):
    model = llm(gateway, models["tooly"], streaming=streaming).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    first = model.invoke(messages)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("get_weather", PARIS)]
    messages.append(first)
    for call in first.tool_calls:
        messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = model.invoke(messages)
    assert not final.tool_calls
    assert isinstance(final.content, str) and final.content


@BOTH
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(gateway, ollama, vllm, models, method):
    structured = llm(gateway, models["plain"]).with_structured_output(Weather, method=method)
    result = structured.invoke("What is the weather in Paris?")
    assert isinstance(result, Weather)
    sent = sent_to(ollama, vllm, models)
    if method == "function_calling":
        assert sent["tools"][0]["function"]["name"] == "Weather"
        if models is RELAY:
            assert sent["tool_choice"]["function"]["name"] == "Weather"
            assert sent["parallel_tool_calls"] is False


# -- reasoning -------------------------------------------------------------------------------------


def test_ollama_reasoning_effort_turns_think_on_and_thinking_comes_back_under_both_names(
    client, ollama
):
    reply = client.chat.completions.create(
        model="ollama-thinker", messages=ASK, reasoning_effort="high"
    )
    message = reply.choices[0].message
    assert message.content == "4"
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"] == "Two plus two is four."
    assert ollama[0].chat_bodies[-1]["think"] is True


def test_ollama_thinking_off_sends_think_false(client, ollama):
    reply = client.chat.completions.create(
        model="ollama-thinker", messages=ASK, reasoning_effort="none"
    )
    assert not (reply.choices[0].message.model_extra or {}).get("reasoning")
    assert ollama[0].chat_bodies[-1]["think"] is False


@pytest.mark.parametrize("model", ["ollama-thinker", "relay-thinker", "relay-thinker-new"])
def test_streamed_thinking_carries_both_names(http, model):
    body = {"model": model, "messages": ASK, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        chunks = sse_chunks(reply)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    thinking = [d for d in deltas if "reasoning" in d or "reasoning_content" in d]
    assert thinking and all(d["reasoning"] == d["reasoning_content"] for d in thinking)
    assert "".join(d["reasoning"] for d in thinking) == "Two plus two is four."
    assert "".join(d.get("content") or "" for d in deltas) == "4"


@pytest.mark.parametrize("model", ["relay-thinker", "relay-thinker-new"])
def test_relayed_thinking_carries_both_names_in_the_whole_answer(client, model):
    message = client.chat.completions.create(model=model, messages=ASK).choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"] == "Two plus two is four."


def test_langchain_reads_relayed_reasoning(gateway):
    reply = llm(gateway, "relay-thinker-new").invoke("2+2?")
    assert reply.content == "4"


# -- capabilities --------------------------------------------------------------------------------


def test_models_list_the_upstreams_capabilities(http):
    started = time.monotonic()
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    assert time.monotonic() - started < 5  # an unreachable upstream does not hold the listing
    plain = cards["ollama-plain"]["capabilities"]
    assert plain["tools"] == "native" and plain["json_schema"] is True
    assert plain["reasoning"] is False and plain["context_length"] == 8192
    assert cards["ollama-plain"]["max_model_len"] == 8192
    assert cards["ollama-thinker"]["capabilities"]["reasoning"] is True
    notools = cards["ollama-notools"]["capabilities"]
    assert notools["tools"] is None and notools["context_length"] == 2048  # num_ctx
    relay = cards["relay-plain"]["capabilities"]
    assert relay["tools"] == "passthrough" and relay["json_schema"] is True
    assert relay["context_length"] == 32768 and cards["relay-plain"]["max_model_len"] == 32768
    assert cards["ollama-down"]["capabilities"] is None
    assert cards["relay-ghost"]["capabilities"] is None


def test_capabilities_are_asked_once_and_kept(http, ollama):
    for _ in range(3):
        card = http.get("/v1/models/ollama-tooly").json()
        assert card["capabilities"]["tools"] == "native"
    shows = [r.body for r in ollama[0].requests if r.path == "/api/show"]
    # asked by this test's first listing, or already known from an earlier test
    assert shows in ([{"model": "tooly:1b"}], [])


# -- bad input is a 400 in the OpenAI envelope -----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "x"}},
            },
            "tool_choice",
        ),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "nope"}}, "tool_choice"),
        ({"reasoning_effort": "high"}, None),  # the model cannot think: Ollama says so
    ],
)
def test_ollama_refuses_what_it_cannot_do_with_a_400(http, fields, param, stream):
    body = {"model": "ollama-plain", "messages": ASK, "stream": stream, **fields}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), param)
    if param is None:
        assert "thinking" in error["message"]


def test_ollama_tool_history_with_arguments_that_are_not_json_is_a_400(http):
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{"}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}]
    body = {"model": "ollama-tooly", "messages": messages}
    assert_openai_error(http.post("/v1/chat/completions", json=body), "messages[1].tool_calls")


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "required"},
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
    ],
)
def test_relay_passes_the_upstreams_400_on_bad_tool_choice(http, fields):
    body = {"model": "relay-plain", "messages": ASK, **fields}
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), "tool_choice")
    assert "tool_choice" in error["message"]
