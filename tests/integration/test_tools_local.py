"""Tools, structured output and reasoning on both in-process engines, through real clients on a
real socket: tiny random-weight models carrying each family's real chat template (the
constraint must make even them write valid calls and JSON), and SmolLM2 for real answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import SMOLLM2_SOURCE, RunningServer, ServerThread, hf_entry
from tests.model_families import FAMILIES
from tests.tiny_gguf import write_tiny_gguf
from tests.tiny_hf import write_tiny_hf_model

pytestmark = pytest.mark.integration

ENGINES = ("gguf", "hf")
TOOL_FAMILIES = ("chatml", "qwen2.5", "qwen3", "llama3.1", "mistral")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Oslo", "Lima"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"utc": {"type": "boolean"}},
            "required": ["utc"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, CLOCK)}


@pytest.fixture(scope="module")
def tools_server(
    tmp_path_factory: pytest.TempPathFactory, conversion_cache: Path, smollm2_available: None
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("families")
    models: list = []
    for name in FAMILIES:
        gguf = write_tiny_gguf(root / f"{name}.gguf", family=name)
        models.append(
            LlamaCppSettings(
                name=f"{name}-gguf", backend="llama_cpp", source=str(gguf), n_threads=1
            )
        )
        folder = write_tiny_hf_model(root / f"{name}-hf", family=name, context=2048)
        models.append(hf_entry(f"{name}-hf", str(folder), conversion_cache, dtype="float32"))
    models += [
        LlamaCppSettings(name="smollm2", backend="llama_cpp", source=SMOLLM2_SOURCE, n_threads=1),
        hf_entry("smollm2-hf", SMOLLM2_SOURCE, conversion_cache, dtype="bfloat16"),
        LlamaCppSettings(
            name="no-tools",
            backend="llama_cpp",
            source=str(root / "qwen2.5.gguf"),
            tool_parser="none",
        ),
    ]
    thread = ServerThread(create_app(GatewayConfig(models=models)))
    thread.start(timeout=300)
    yield RunningServer(
        app=thread.server.config.app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port
    )
    thread.stop()


@pytest.fixture(scope="module")
def client(tools_server: RunningServer) -> OpenAI:
    return OpenAI(base_url=tools_server.v1, api_key="unused", max_retries=0, timeout=120)


def ask(text: str = "What is the weather in Paris this week?") -> list[dict]:
    return [{"role": "user", "content": text}]


def check_calls(calls, offered=("get_weather", "get_time")) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id
        assert call.function.name in offered
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_choice_required_gives_a_valid_call_of_an_offered_function(client, family, engine):
    reply = client.chat.completions.create(
        model=f"{family}-{engine}",
        messages=ask(),
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    check_calls(choice.message.tool_calls)
    assert len(choice.message.tool_calls) == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_a_named_function_is_the_one_called_and_streams_in_the_openai_shape(client, family, engine):
    stream = client.chat.completions.create(
        model=f"{family}-{engine}",
        messages=ask(),
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,  # parallel_tool_calls unset: still exactly one call of a named function
        max_tokens=120,
        stream=True,
    )
    deltas, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    first, rest = deltas[0], deltas[1:]
    assert (first.index, first.type, first.function.name) == (0, "function", "get_time")
    assert first.id
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), SCHEMAS["get_time"])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", ["qwen2.5", "mistral"])
def test_the_sdk_stream_helper_assembles_the_calls(client, family, engine):
    with client.chat.completions.stream(
        model=f"{family}-{engine}",
        messages=ask(),
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
    ) as stream:
        final = stream.get_final_completion()
    check_calls(final.choices[0].message.tool_calls, offered=("get_weather",))


class Forecast(BaseModel):
    city: Literal["Paris", "Oslo"]
    days: int = Field(ge=1, le=9)
    sunny: bool


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", ["chatml", "qwen3", "llama3.1"])
def test_parse_with_a_pydantic_model_on_a_random_model(client, family, engine):
    reply = client.chat.completions.parse(
        model=f"{family}-{engine}",
        messages=ask("Forecast for Paris?"),
        response_format=Forecast,
        reasoning_effort="none",  # qwen3 would think first, for longer than max_tokens
        temperature=0,
        max_tokens=60,
    )
    assert isinstance(reply.choices[0].message.parsed, Forecast)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_a_tool_round_trip_goes_through_each_template(client, family, engine):
    call_id = "call_abc123"  # not a Mistral id: it is mapped to one for the template
    history = [
        *ask(),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "days": 1}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 21}'},
    ]
    reply = client.chat.completions.create(
        model=f"{family}-{engine}", messages=history, tools=[WEATHER], max_tokens=4
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    bare = client.chat.completions.create(
        model=f"{family}-{engine}", messages=history[:1], max_tokens=1
    )
    with_tools = client.chat.completions.create(
        model=f"{family}-{engine}", messages=history[:1], tools=[WEATHER], max_tokens=1
    )
    # the rendered tool definitions are prompt, and counted as such
    assert with_tools.usage.prompt_tokens > bare.usage.prompt_tokens + 20


class Address(BaseModel):
    city: Literal["Oslo", "Lima"]


class Person(BaseModel):
    """A person and where they live (pydantic writes the nested model as $defs + $ref)."""

    name: str = Field(max_length=8)
    home: Address


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tool_whose_schema_has_defs_is_called_as_written(client, engine):
    import openai

    tool = openai.pydantic_function_tool(Person)
    assert "$defs" in tool["function"]["parameters"]
    reply = client.chat.completions.create(
        model=f"qwen2.5-{engine}",
        messages=ask("Add Ada, who lives in Oslo."),
        tools=[tool, WEATHER],
        tool_choice={"type": "function", "function": {"name": "Person"}},
        max_tokens=120,
    )
    call = reply.choices[0].message.tool_calls[0]
    Person.model_validate_json(call.function.arguments)
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_deprecated_functions_api_gets_a_function_call_back(client, engine):
    model = f"qwen2.5-{engine}"
    functions = [WEATHER["function"], CLOCK["function"]]
    forced = {"name": "get_weather"}
    reply = client.chat.completions.create(
        model=model, messages=ask(), functions=functions, function_call=forced, max_tokens=80
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "function_call"
    assert message.tool_calls is None and message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(message.function_call.arguments), SCHEMAS["get_weather"])
    stream = client.chat.completions.create(
        model=model,
        messages=ask(),
        functions=functions,
        function_call=forced,
        max_tokens=80,
        stream=True,
    )
    chunks = list(stream)
    streamed = [c.choices[0].delta.function_call for c in chunks if c.choices]
    arguments = "".join(f.arguments or "" for f in streamed if f is not None)
    assert [f.name for f in streamed if f is not None and f.name] == ["get_weather"]
    jsonschema.validate(json.loads(arguments), SCHEMAS["get_weather"])
    assert chunks[-1].choices[0].finish_reason == "function_call"
    # the call and its result go back in the deprecated shape, rendered as a tool round trip
    history = [
        *ask(),
        {"role": "assistant", "content": None, "function_call": message.function_call.model_dump()},
        {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'},
    ]
    after = client.chat.completions.create(
        model=model, messages=history, functions=functions, max_tokens=4
    )
    assert after.choices[0].finish_reason in ("stop", "length", "function_call")
    bare = client.chat.completions.create(model=model, messages=history[:1], max_tokens=1)
    assert after.usage.prompt_tokens > bare.usage.prompt_tokens + 20  # functions are prompt


@pytest.mark.parametrize("engine", ENGINES)
def test_reasoning_is_apart_from_the_answer_under_both_names(tools_server, engine):
    body = {
        "model": f"deepseek-r1-{engine}",
        "messages": ask("2+2?"),
        "max_tokens": 8,
        "temperature": 0,
    }
    reply = httpx.post(f"{tools_server.v1}/chat/completions", json=body, timeout=60).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] and message["reasoning"] == message["reasoning_content"]
    assert not message["content"]  # cut in the middle of its thinking: no answer invented
    with httpx.stream(
        "POST", f"{tools_server.v1}/chat/completions", json={**body, "stream": True}, timeout=60
    ) as stream:
        deltas = [
            json.loads(line[6:])["choices"][0]["delta"]
            for line in stream.iter_lines()
            if line.startswith("data: {") and '"choices":[{' in line
        ]
    thinking = "".join(d.get("reasoning_content", "") for d in deltas)
    assert thinking == message["reasoning_content"]
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)


@pytest.mark.parametrize("engine", ENGINES)
def test_with_a_schema_the_model_thinks_first_and_the_answer_is_constrained(client, engine):
    close = FAMILIES["deepseek-r1"].token_id("</think>")
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "integer", "minimum": 0, "maximum": 99},
            "sure": {"type": "boolean"},
        },
        "required": ["answer", "sure"],
    }
    reply = client.chat.completions.create(
        model=f"deepseek-r1-{engine}",
        messages=ask("2+2?"),
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        logit_bias={str(close): 30},  # a random model would think forever otherwise
        temperature=0,
        max_tokens=100,
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


@pytest.mark.parametrize(
    ("model", "tools", "parser", "reasoning"),
    [
        ("qwen2.5-gguf", "native", "hermes", None),
        ("qwen3-hf", "native", "hermes", "think"),
        ("llama3.1-gguf", "native", "llama3_json", None),
        ("mistral-hf", "native", "mistral", None),
        ("chatml-gguf", "prompted", "hermes", None),
        ("deepseek-r1-hf", "prompted", "hermes", "think"),
        ("no-tools", None, None, None),
    ],
)
def test_capabilities_in_the_model_list_come_from_the_template(
    tools_server, model, tools, parser, reasoning
):
    card = httpx.get(f"{tools_server.v1}/models/{model}", timeout=30).json()
    assert card["capabilities"] == {
        "tools": tools,
        "tool_parser": parser,
        "json_schema": True,
        "reasoning": reasoning is not None,
        "reasoning_parser": reasoning,
        "context_length": card["max_model_len"],
    }
    assert card["max_model_len"] > 0


def test_tools_on_a_model_with_tool_calling_off_are_a_400(tools_server):
    reply = httpx.post(
        f"{tools_server.v1}/chat/completions",
        json={"model": "no-tools", "messages": ask(), "tools": [WEATHER]},
        timeout=30,
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("tools", "unsupported_parameter")
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("function", "param"),
    [
        ({"name": "", "parameters": {"type": "object"}}, "name"),
        ({"name": "get weather"}, "name"),
        ({"name": "f", "parameters": {"type": "array", "items": {}}}, "parameters"),
    ],
)
def test_a_tool_no_call_could_satisfy_is_a_400_on_every_surface(tools_server, function, param):
    """OpenAI's rules for a function (a name of a-z, 0-9, _ and -; arguments that are an
    object), checked before anything is generated: a forced call could never be read back."""
    tool = {"type": "function", "function": function}
    forced = {"model": "smollm2", "messages": ask(), "tools": [tool], "tool_choice": "required"}
    with httpx.Client(base_url=tools_server.base_url, timeout=30) as http:
        reply = http.post("/v1/chat/completions", json=forced)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == f"tools[0].function.{param}"
        flat = {"type": "function", **function}
        reply = http.post(
            "/v1/responses",
            json={"model": "smollm2", "input": "hi", "tools": [flat], "tool_choice": "required"},
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == f"tools[0].{param}"
        if function["name"] != "get weather":  # Ollama takes any name; not an empty one here
            reply = http.post(
                "/api/chat",
                json={"model": "smollm2", "messages": ask(), "tools": [tool], "stream": False},
            )
            assert reply.status_code == 400, reply.text
            assert "tool" in reply.json()["error"]


# -- SmolLM2: real answers -------------------------------------------------------------------

SMOL = ("smollm2", "smollm2-hf")


@pytest.mark.parametrize("model", SMOL)
def test_smollm2_calls_the_weather_function_for_paris(client, model):
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "the city"}},
                "required": ["city"],
            },
        },
    }
    reply = client.chat.completions.create(
        model=model,
        messages=ask("What is the weather like in Paris today?"),
        tools=[weather],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "Paris" in json.loads(call.function.arguments)["city"]


@pytest.mark.parametrize("model", SMOL)
def test_langchain_tool_loop_and_structured_output(tools_server, model):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"It is sunny and 21 degrees in {city}."

    llm = ChatOpenAI(
        base_url=tools_server.v1,
        api_key="x",
        model=model,
        temperature=0,
        max_retries=0,
        max_tokens=80,
    )
    agent = llm.bind_tools([get_weather], tool_choice="get_weather")
    messages = [HumanMessage("What is the weather in Paris?")]
    first = agent.invoke(messages)
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    assert "Paris" in first.tool_calls[0]["args"]["city"]
    messages += [
        first,
        ToolMessage(
            get_weather.invoke(first.tool_calls[0]["args"]), tool_call_id=first.tool_calls[0]["id"]
        ),
    ]
    final = llm.bind_tools([get_weather]).invoke(messages)
    assert isinstance(final.content, str)
    assert final.content.strip() or final.tool_calls

    class Capital(BaseModel):
        """A country's capital city."""

        country: str
        capital: str

    for method in ("json_schema", "function_calling"):
        found = llm.with_structured_output(Capital, method=method).invoke(
            "What is the capital of France?"
        )
        assert isinstance(found, Capital), method
        assert found.capital.strip(), method
