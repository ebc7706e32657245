"""``POST /v1/responses`` driven by the real openai SDK (``client.responses``: plain, streaming,
the stream helper) against the real gateway on a real socket: SmolLM2 and tiny random models
of the tool-calling and thinking families on llama.cpp, and an Ollama and an OpenAI-compatible
upstream (``tests/fake_upstreams.py``) behind the same surface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from backends.llama_cpp.settings import LlamaCppSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI, Fault
from tests.integration.conftest import SMOLLM2_SOURCE, ServerThread
from tests.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.integration

FRANCE = "Name the capital of France in one word."
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"enum": ["Paris", "Oslo", "Lima"]},  # a random model's strings never end
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "days"],
    },
}
CLOCK = {
    "type": "function",
    "name": "get_time",
    "parameters": {
        "type": "object",
        "properties": {"utc": {"type": "boolean"}},
        "required": ["utc"],
    },
}
SCHEMAS = {t["name"]: t["parameters"] for t in (WEATHER, CLOCK)}
MESSAGE_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def squeeze(types: list[str]) -> list[str]:
    """Event types with runs of the same delta event folded into one."""
    return [t for i, t in enumerate(types) if not (t.endswith(".delta") and types[i - 1] == t)]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, smollm2_available: None) -> Iterator[str]:
    root = tmp_path_factory.mktemp("responses")

    def llama(name: str, source: str) -> LlamaCppSettings:
        return LlamaCppSettings(name=name, backend="llama_cpp", source=source, n_threads=1)

    models = [llama("smollm2", SMOLLM2_SOURCE)]
    for family in ("qwen2.5", "qwen3", "deepseek-r1"):
        gguf = write_tiny_gguf(root / f"{family}.gguf", family=family)
        models.append(llama(family, str(gguf)))
    thread = ServerThread(create_app(GatewayConfig(models=models)))
    thread.start(timeout=300)
    yield f"http://127.0.0.1:{thread.port}/v1"
    thread.stop()


@pytest.fixture(scope="module")
def client(local: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=local, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


# -- plain and streaming, SmolLM2 ----------------------------------------------------------


def test_a_plain_answer(client):
    response = client.responses.create(
        model="smollm2", input=FRANCE, temperature=0, max_output_tokens=20
    )
    assert "Paris" in response.output_text
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "smollm2"
    assert response.store is False
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_instructions_are_a_system_message_first(client):
    def ask(instructions: str) -> Any:
        return client.responses.create(
            model="smollm2",
            instructions=instructions,
            input="What is the capital of France?",
            temperature=0,
            max_output_tokens=20,
        )

    short = ask("Answer with the city only.")
    longer = ask("You are a geography teacher. Answer with the city only.")
    assert "Paris" in longer.output_text
    assert longer.instructions.startswith("You are a geography teacher")
    assert longer.usage.input_tokens > short.usage.input_tokens  # they are in the prompt


def test_a_message_list_is_a_multi_turn_conversation(client):
    first = client.responses.create(
        model="smollm2", input=FRANCE, temperature=0, max_output_tokens=20
    )
    turns: list[Any] = [
        {"role": "user", "content": FRANCE},
        *[item.model_dump(exclude_none=True) for item in first.output],  # sent back as input
        {"role": "user", "content": [{"type": "input_text", "text": "And of Italy?"}]},
    ]
    response = client.responses.create(
        model="smollm2", input=turns, temperature=0, max_output_tokens=20
    )
    assert "Rome" in response.output_text
    assert response.usage.input_tokens > first.usage.input_tokens


def test_the_sdk_stream_helper_sees_the_events_in_order(client):
    with client.responses.stream(
        model="smollm2", input=FRANCE, temperature=0, max_output_tokens=20
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert squeeze(types) == [
        "response.created",
        "response.in_progress",
        *MESSAGE_EVENTS,
        "response.completed",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas and "Paris" in deltas
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage.output_tokens > 0


def test_create_with_stream_true_ends_with_the_completed_response(client):
    events = list(
        client.responses.create(
            model="smollm2", input=FRANCE, temperature=0, max_output_tokens=20, stream=True
        )
    )
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert events[-1].response.output_text == done.text
    assert {e.response.id for e in events if hasattr(e, "response")} == {events[0].response.id}


def test_max_output_tokens_makes_it_incomplete(client):
    story = "Write a long story about a dragon."
    response = client.responses.create(model="smollm2", input=story, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    assert response.output[0].status == "incomplete"
    events = list(
        client.responses.create(model="smollm2", input=story, max_output_tokens=3, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_previous_response_id_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smollm2", input="hi", previous_response_id="resp_abc")
    assert caught.value.param == "previous_response_id"
    assert "stateless" in caught.value.message


def test_store_true_is_a_400_and_false_is_served(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smollm2", input="hi", store=True)
    assert caught.value.param == "store"
    served = client.responses.create(model="smollm2", input="hi", store=False, max_output_tokens=1)
    assert served.store is False


@pytest.mark.parametrize("stream", [False, True])
def test_an_input_over_the_window_is_a_400_naming_input(client, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="smollm2", input="word " * 3000, max_output_tokens=16, stream=stream
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "input"
    assert "in the input" in caught.value.message and "messages" not in caught.value.message
    with pytest.raises(openai.BadRequestError) as limit:
        client.responses.create(model="smollm2", input="hi", max_output_tokens=5000)
    assert limit.value.param == "max_output_tokens"  # the limit alone fills the window


def test_stored_responses_cannot_be_retrieved_or_deleted(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_abc")
    assert "stateless" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_abc")


def test_a_non_text_part_is_the_engines_400(client):
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="smollm2", input=[{"role": "user", "content": [image]}], max_output_tokens=1
        )
    assert caught.value.code == "unsupported_parameter"
    assert "not supported" in caught.value.message


# -- tools and reasoning, tiny models of the families --------------------------------------


def check_call(item: Any, offered: tuple[str, ...] = ("get_weather", "get_time")) -> None:
    assert item.type == "function_call" and item.status == "completed"
    assert item.id.startswith("fc_") and item.call_id
    assert item.name in offered
    jsonschema.validate(json.loads(item.arguments), SCHEMAS[item.name])


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_tool_choice_required_gives_a_function_call_item(client, family):
    response = client.responses.create(
        model=family,
        input="What is the weather in Paris this week?",
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        reasoning={"effort": "none"},  # a random model would think for longer than the budget
        temperature=0,
        max_output_tokens=120,
    )
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    check_call(calls[0])
    assert response.tool_choice == "required" and response.parallel_tool_calls is False


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_a_named_function_streams_as_argument_deltas(client, family):
    with client.responses.stream(
        model=family,
        input="What time is it?",
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "name": "get_time"},
        reasoning={"effort": "none"},
        temperature=0,
        max_output_tokens=120,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = squeeze([e.type for e in events])
    start = types.index("response.output_item.added")
    assert types[start : start + 4] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    added = events[[e.type for e in events].index("response.output_item.added")]
    assert added.item.type == "function_call" and added.item.arguments == ""
    (call,) = final.output
    check_call(call, offered=("get_time",))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments


def test_a_function_call_and_its_output_go_back_in(client):
    ask = {"role": "user", "content": "What is the weather in Paris this week?"}
    first = client.responses.create(
        model="qwen2.5",
        input=[ask],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=120,
    )
    (call,) = first.output
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}
    second = client.responses.create(
        model="qwen2.5",
        input=[ask, call, result],  # the SDK's own output item, sent back as it came
        tools=[WEATHER],
        max_output_tokens=4,
    )
    assert second.status in ("completed", "incomplete")
    # the call and its result are rendered into the prompt
    assert second.usage.input_tokens > first.usage.input_tokens + 10


class Forecast(BaseModel):
    city: str = Field(pattern="^(Paris|Oslo)$")
    days: int = Field(ge=1, le=9)
    sunny: bool


def test_parse_with_a_pydantic_model_on_a_random_model(client):
    response = client.responses.parse(
        model="qwen2.5",
        input="Forecast for Paris?",
        text_format=Forecast,  # sent as text.format json_schema, strict
        temperature=0,
        max_output_tokens=60,
    )
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Forecast)
    assert response.text.format.type == "json_schema"


def test_smollm2_calls_the_weather_function_for_paris(client):
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    }
    response = client.responses.create(
        model="smollm2",
        input="What is the weather like in Paris today?",
        tools=[weather],
        tool_choice="required",
        temperature=0,
        max_output_tokens=60,
    )
    call = next(item for item in response.output if item.type == "function_call")
    assert call.name == "get_weather"
    assert "Paris" in json.loads(call.arguments)["city"]


def test_a_thinking_model_writes_a_reasoning_item(client):
    response = client.responses.create(
        model="deepseek-r1", input="2+2?", temperature=0, max_output_tokens=8
    )
    # cut in the middle of its thinking: a reasoning item, no answer invented
    assert response.status == "incomplete"
    (reasoning,) = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary == [] and reasoning.content[0].text
    assert response.output_text == ""
    with client.responses.stream(
        model="deepseek-r1", input="2+2?", temperature=0, max_output_tokens=8
    ) as stream:
        events = list(stream)
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thinking == reasoning.content[0].text
    assert events[-1].type == "response.incomplete"


# -- upstreams: Ollama and an OpenAI-compatible server ------------------------------------

PARIS = {"city": "Paris", "days": 2}
THOUGHT = ["Two plus two ", "is four."]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI, str]]:
    ollama = FakeOllama(
        [
            FakeModel("llama3:8b"),
            FakeModel("tooly:1b", tool_call={"name": "get_weather", "arguments": PARIS}),
            FakeModel("qwen3:8b", tokens=["4"], reasoning=THOUGHT),
        ]
    )
    vllm = FakeOpenAI(
        [
            FakeModel("org/plain"),
            FakeModel("org/tooly", tool_call={"name": "get_weather", "arguments": PARIS}),
            FakeModel("org/thinker", tokens=["4"], reasoning=THOUGHT),
        ]
    )
    ollama_thread, vllm_thread = ServerThread(ollama), ServerThread(vllm)  # type: ignore[arg-type]
    ollama_thread.start()
    vllm_thread.start()
    common: dict[str, Any] = {"health_check_interval": 0}
    models: list[Any] = []
    for kind, remote in (("plain", "llama3:8b"), ("tooly", "tooly:1b"), ("thinker", "qwen3:8b")):
        models.append(
            OllamaSettings(
                name=f"ollama-{kind}",
                backend="ollama",
                base_url=f"http://127.0.0.1:{ollama_thread.port}",
                upstream_model=remote,
                **common,
            )
        )
    for kind in ("plain", "tooly", "thinker"):
        models.append(
            OpenAICompatSettings(
                name=f"openai-{kind}",
                backend="openai",
                base_url=f"http://127.0.0.1:{vllm_thread.port}/v1",
                upstream_model=f"org/{kind}",
                **common,
            )
        )
    gateway = ServerThread(create_app(GatewayConfig(models=models)))
    gateway.start()
    yield ollama, vllm, f"http://127.0.0.1:{gateway.port}/v1"
    gateway.stop()
    ollama_thread.stop()
    vllm_thread.stop()


@pytest.fixture
def upstream_client(upstreams) -> Iterator[OpenAI]:
    upstreams[0].reset()
    upstreams[1].reset()
    with OpenAI(base_url=upstreams[2], api_key="x", max_retries=0, timeout=30) as c:
        yield c


UPSTREAMS = pytest.mark.parametrize("upstream", ["ollama", "openai"])


def sent(upstreams, upstream: str) -> dict[str, Any]:
    """The last chat body the upstream received."""
    fake = upstreams[0] if upstream == "ollama" else upstreams[1]
    return fake.chat_bodies[-1]


@UPSTREAMS
def test_an_upstream_answers_plain_and_streaming(upstream_client, upstreams, upstream):
    model = f"{upstream}-plain"
    response = upstream_client.responses.create(
        model=model, instructions="Be brief.", input="Hello?", max_output_tokens=50
    )
    assert response.status == "completed" and response.output_text
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    body = sent(upstreams, upstream)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["content"] == "Hello?"
    with upstream_client.responses.stream(model=model, input="Hello?") as stream:
        types = squeeze([e.type for e in stream])
        final = stream.get_final_response()
    assert types == [
        "response.created",
        "response.in_progress",
        *MESSAGE_EVENTS,
        "response.completed",
    ]
    assert final.output_text == response.output_text


@UPSTREAMS
def test_an_upstream_tool_call_and_its_result_round_trip(upstream_client, upstreams, upstream):
    model = f"{upstream}-tooly"
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = upstream_client.responses.create(model=model, input=[ask], tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == PARIS
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "21 and sunny"}
    upstream_client.responses.create(model=model, input=[ask, call, result], tools=[WEATHER])
    history = sent(upstreams, upstream)["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert history[2]["content"] == "21 and sunny"


@UPSTREAMS
def test_an_upstream_forced_call_streams(upstream_client, upstream):
    with upstream_client.responses.stream(
        model=f"{upstream}-tooly",
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in types
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


@UPSTREAMS
def test_an_upstream_thinker_gives_a_reasoning_item_then_the_message(upstream_client, upstream):
    response = upstream_client.responses.create(
        model=f"{upstream}-thinker", input="2+2?", reasoning={"effort": "low"}
    )
    reasoning, message = response.output
    assert reasoning.type == "reasoning"
    assert reasoning.content[0].text == "".join(THOUGHT)
    assert message.type == "message" and response.output_text == "4"
    assert response.reasoning.effort == "low"


def test_an_upstream_gets_previous_response_id_refused_before_it_is_asked(
    upstream_client, upstreams
):
    with pytest.raises(openai.BadRequestError):
        upstream_client.responses.create(
            model="openai-plain", input="hi", previous_response_id="resp_1"
        )
    assert upstreams[1].chat_bodies == []


@UPSTREAMS
def test_an_upstream_error_mid_stream_is_error_then_response_failed(
    upstream_client, upstreams, upstream
):
    fake = upstreams[0] if upstream == "ollama" else upstreams[1]
    fake.faults.append(Fault("error_line", message="the GPU fell over", after=2))
    with upstream_client.responses.stream(model=f"{upstream}-plain", input="Hello?") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError):  # the SDK's way: no response.completed
            stream.get_final_response()
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert "the GPU fell over" in events[-2].message
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.message == events[-2].message


@UPSTREAMS
def test_an_upstream_error_before_the_stream_is_its_status(upstream_client, upstreams, upstream):
    fake = upstreams[0] if upstream == "ollama" else upstreams[1]
    fake.faults.append(Fault("status", status=429, message="slow down", retry_after="1"))
    with pytest.raises(openai.RateLimitError):
        upstream_client.responses.create(model=f"{upstream}-plain", input="Hello?", stream=True)
