"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` driven by the official anthropic SDK
(``messages.create``, ``messages.stream``, ``messages.count_tokens``) against the real gateway
on a real socket, with API keys configured: SmolLM2 and tiny random models of a tool-calling
and a thinking family on llama.cpp, and an Ollama and an OpenAI-compatible upstream
(``tests/fake_upstreams.py``) behind the same surface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import pytest
from anthropic.types import Message

from backends.llama_cpp.settings import LlamaCppSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI
from tests.integration.conftest import SMOLLM2_SOURCE, ServerThread, wait_until
from tests.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.integration

KEY = "sk-anthropic-test"
# The current SDK has no sampling arguments (newer Claude models take none); llmgate honours
# them, so they go in the body as older SDKs and other clients send them.
GREEDY = {"temperature": 0}
FRANCE = [{"role": "user", "content": "Name the capital of France in one word."}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Oslo", "Lima"]},  # a random model's strings never end
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER_SCHEMA,
}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, smollm2_available: None) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("anthropic")

    def llama(name: str, source: str) -> LlamaCppSettings:
        return LlamaCppSettings(name=name, backend="llama_cpp", source=source, n_threads=1)

    models = [llama("smollm2", SMOLLM2_SOURCE)]
    for family in ("qwen2.5", "deepseek-r1"):
        models.append(llama(family, str(write_tiny_gguf(root / f"{family}.gguf", family=family))))
    app = create_app(GatewayConfig(server=ServerSettings(api_keys=[KEY]), models=models))
    thread = ServerThread(app)
    thread.start(timeout=300)
    yield app, f"http://127.0.0.1:{thread.port}"
    thread.stop()


@pytest.fixture(scope="module")
def claude(local) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=local[1], api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# -- SmolLM2 --------------------------------------------------------------------------------


def test_create_answers(claude):
    message = claude.messages.create(
        model="smollm2", max_tokens=20, extra_body=GREEDY, messages=FRANCE
    )
    assert "Paris" in text_of(message)
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "smollm2"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message._request_id  # the SDK reads `request-id`


def test_stream_text_and_the_final_message(claude):
    with claude.messages.stream(
        model="smollm2", max_tokens=20, extra_body=GREEDY, messages=FRANCE
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == text_of(final) and "Paris" in text_of(final)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_message_start_reports_the_prompts_tokens_as_the_final_usage_does(claude):
    """Anthropic sends the input tokens in ``message_start`` already (clients that read usage
    there recorded 0); the in-process engine knows them before it generates."""
    system = "You are a helpful assistant who answers in one word. " * 8  # a prefix worth copying
    body = {"model": "smollm2", "max_tokens": 8, "extra_body": GREEDY, "system": system}
    question = [{"role": "user", "content": "Name a colour, any colour at all, please."}]
    for _ in range(2):  # cold, then with the prompt in the cache
        with claude.messages.stream(**body, messages=question) as stream:
            events = list(stream)
            final = stream.get_final_message()
        start = next(e for e in events if e.type == "message_start").message.usage
        assert start.input_tokens == final.usage.input_tokens > 0
        assert start.cache_read_input_tokens == final.usage.cache_read_input_tokens
    assert final.usage.cache_read_input_tokens > 0  # the second time


def test_count_tokens_is_the_input_tokens_of_the_answer(claude):
    body: dict[str, Any] = {
        "model": "smollm2",
        "system": "You are a geography teacher.",
        "messages": FRANCE,
        "tools": [WEATHER],
    }
    counted = claude.messages.count_tokens(**body)
    answered = claude.messages.create(**body, max_tokens=1)
    assert counted.input_tokens == prompt_tokens(answered) > 0
    again = claude.messages.create(**body, max_tokens=1)  # the same prompt: read from the cache
    assert again.usage.cache_read_input_tokens > 0
    assert prompt_tokens(again) == counted.input_tokens


def prompt_tokens(message: Any) -> int:
    """Anthropic counts a prompt as what was read afresh plus what came from the cache."""
    usage = message.usage
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0))


def test_a_final_assistant_turn_is_continued(claude):
    """Prefill: the reply holds only what the model adds after the assistant's words; the
    count includes them; trailing whitespace is Anthropic's 400."""
    prefill = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    message = claude.messages.create(
        model="smollm2", max_tokens=8, extra_body=GREEDY, messages=prefill
    )
    assert text_of(message).startswith(" Paris"), text_of(message)
    with claude.messages.stream(
        model="smollm2", max_tokens=8, extra_body=GREEDY, messages=prefill
    ) as stream:
        assert "".join(stream.text_stream) == text_of(message)
    counted = claude.messages.count_tokens(model="smollm2", messages=prefill)
    assert counted.input_tokens == message.usage.input_tokens + (
        message.usage.cache_read_input_tokens or 0
    )
    spaced = [prefill[0], {"role": "assistant", "content": "The capital of France is "}]
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        claude.messages.create(model="smollm2", max_tokens=8, messages=spaced)


def test_max_tokens_is_the_stop_reason_when_cut(claude):
    message = claude.messages.create(
        model="smollm2", max_tokens=3, messages=[{"role": "user", "content": "Tell a story."}]
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_a_stop_sequence_is_named(claude):
    message = claude.messages.create(
        model="smollm2", max_tokens=20, extra_body=GREEDY, messages=FRANCE, stop_sequences=["Paris"]
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "Paris"
    assert "Paris" not in text_of(message)
    with claude.messages.stream(
        model="smollm2", max_tokens=20, extra_body=GREEDY, messages=FRANCE, stop_sequences=["Paris"]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "Paris")


def test_an_unknown_model_is_not_found(claude):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="claude-nope", max_tokens=5, messages=FRANCE)
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_missing_max_tokens_is_a_bad_request(claude):
    with pytest.raises(anthropic.BadRequestError) as caught:  # the SDK's post: past its checks
        claude.post("/v1/messages", body={"model": "smollm2", "messages": FRANCE}, cast_to=Message)
    assert "max_tokens" in caught.value.message


def test_keys_by_x_api_key_or_bearer_and_a_wrong_one_is_401(local):
    base = local[1]
    with anthropic.Anthropic(base_url=base, auth_token=KEY, max_retries=0) as bearer:
        assert bearer.messages.count_tokens(model="smollm2", messages=FRANCE).input_tokens > 0
    with (
        anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError, match="x-api-key"),
    ):
        wrong.messages.create(model="smollm2", max_tokens=5, messages=FRANCE)


def test_models_list_and_retrieve_in_anthropics_shape(claude):
    """``/v1/models`` is one list for both SDKs: Anthropic's fields are there too."""
    listed = list(claude.models.list())
    assert [m.id for m in listed] == ["smollm2", "qwen2.5", "deepseek-r1"]
    first = listed[0]
    assert first.type == "model" and first.display_name == "smollm2"
    assert first.created_at.year >= 2025 and first.lifecycle == "active"
    page = claude.models.list()
    assert page.first_id == "smollm2" and page.last_id == "deepseek-r1" and not page.has_more
    assert claude.models.retrieve("qwen2.5").display_name == "qwen2.5"


def test_a_disconnect_stops_the_generation(local, claude):
    stats = local[0].state.router.resolve("smollm2").stats
    cancelled = stats.requests_cancelled
    essay = [{"role": "user", "content": "Write a very long essay about the sea."}]
    with claude.messages.stream(model="smollm2", max_tokens=900, messages=essay) as stream:
        for n, _ in enumerate(stream.text_stream):
            if n >= 10:
                break
        at_close = stats.tokens_generated
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 5), stats
    assert stats.tokens_generated - at_close <= 5


# -- tools and thinking, tiny models of the families ----------------------------------------


def test_tool_choice_any_gives_a_tool_use_block_and_the_result_goes_back(claude):
    ask = {"role": "user", "content": "What is the weather in Paris this week?"}
    first = claude.messages.create(
        model="qwen2.5",
        max_tokens=120,
        extra_body=GREEDY,
        messages=[ask],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict)
    jsonschema.validate(call.input, WEATHER_SCHEMA)
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "21 degrees, sunny"}
    second = claude.messages.create(
        model="qwen2.5",
        max_tokens=4,
        messages=[
            ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
        tools=[WEATHER],
    )
    # the call and its result are rendered into the prompt
    assert prompt_tokens(second) > prompt_tokens(first) + 5


def test_a_streamed_tool_use_has_input_json_deltas(claude):
    with claude.messages.stream(
        model="qwen2.5",
        max_tokens=120,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    (call,) = final.content
    assert call.type == "tool_use" and final.stop_reason == "tool_use"
    jsonschema.validate(call.input, WEATHER_SCHEMA)


def test_a_thinking_model_writes_thinking_blocks(claude):
    message = claude.messages.create(
        model="deepseek-r1",
        max_tokens=8,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "2+2?"}],
        thinking={"type": "adaptive"},  # enabled needs max_tokens above a 1,024 budget
    )
    # cut in the middle of its thinking: a thinking block, no answer invented
    assert message.stop_reason == "max_tokens"
    (thinking,) = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature == ""
    with claude.messages.stream(
        model="deepseek-r1",
        max_tokens=8,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "2+2?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    assert final.content[0].thinking == thinking.thinking


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
    models: list[Any] = []
    for kind, remote in (("plain", "llama3:8b"), ("tooly", "tooly:1b"), ("thinker", "qwen3:8b")):
        models.append(
            OllamaSettings(
                name=f"ollama-{kind}",
                backend="ollama",
                base_url=f"http://127.0.0.1:{ollama_thread.port}",
                upstream_model=remote,
                health_check_interval=0,
            )
        )
        models.append(
            OpenAICompatSettings(
                name=f"openai-{kind}",
                backend="openai",
                base_url=f"http://127.0.0.1:{vllm_thread.port}/v1",
                upstream_model=f"org/{kind}",
                health_check_interval=0,
            )
        )
    config = GatewayConfig(server=ServerSettings(api_keys=[KEY]), models=models)
    gateway = ServerThread(create_app(config))
    gateway.start()
    yield ollama, vllm, f"http://127.0.0.1:{gateway.port}"
    gateway.stop()
    ollama_thread.stop()
    vllm_thread.stop()


@pytest.fixture
def upstream_claude(upstreams) -> Iterator[anthropic.Anthropic]:
    upstreams[0].reset()
    upstreams[1].reset()
    with anthropic.Anthropic(base_url=upstreams[2], api_key=KEY, max_retries=0, timeout=30) as c:
        yield c


UPSTREAMS = pytest.mark.parametrize("upstream", ["ollama", "openai"])


def sent(upstreams, upstream: str) -> dict[str, Any]:
    """The last chat body the upstream received."""
    return (upstreams[0] if upstream == "ollama" else upstreams[1]).chat_bodies[-1]


@UPSTREAMS
def test_an_upstream_answers_create_and_stream(upstream_claude, upstreams, upstream):
    model = f"{upstream}-plain"
    message = upstream_claude.messages.create(
        model=model,
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello?"}],
    )
    assert text_of(message) == f"Hello from fake {upstream}." and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 5
    body = sent(upstreams, upstream)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    with upstream_claude.messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Hello?"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == text_of(final) == text_of(message)


@UPSTREAMS
def test_an_upstream_count_tokens_is_the_input_tokens_of_the_answer(upstream_claude, upstream):
    body: dict[str, Any] = {
        "model": f"{upstream}-plain",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    counted = upstream_claude.messages.count_tokens(**body)
    answered = upstream_claude.messages.create(**body, max_tokens=50)
    assert counted.input_tokens == prompt_tokens(answered) > 0


@UPSTREAMS
def test_an_upstream_max_tokens_and_stop_sequences(upstream_claude, upstreams, upstream):
    model, hello = f"{upstream}-plain", [{"role": "user", "content": "Hello?"}]
    cut = upstream_claude.messages.create(model=model, max_tokens=2, messages=hello)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
    stopped = upstream_claude.messages.create(
        model=model, max_tokens=50, messages=hello, stop_sequences=[" fake"]
    )
    assert text_of(stopped) == "Hello from"
    # Ollama does not say which stop string matched (end_turn); vLLM's stop_reason does
    if upstream == "ollama":
        assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)
    else:
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", " fake")
    assert sent(upstreams, upstream)["messages"][-1]["content"] == "Hello?"


@UPSTREAMS
def test_an_upstream_unknown_model_is_not_found(upstream_claude, upstream):
    with pytest.raises(anthropic.NotFoundError):
        upstream_claude.messages.create(model=f"{upstream}-nope", max_tokens=5, messages=FRANCE)


@UPSTREAMS
def test_an_upstream_tool_use_round_trip(upstream_claude, upstreams, upstream):
    model = f"{upstream}-tooly"
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = upstream_claude.messages.create(
        model=model, max_tokens=100, messages=[ask], tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == PARIS
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "21 and sunny"}
    upstream_claude.messages.create(
        model=model,
        max_tokens=100,
        messages=[
            ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
        tools=[WEATHER],
    )
    history = sent(upstreams, upstream)["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert history[2]["content"] == "21 and sunny"
    with upstream_claude.messages.stream(
        model=model, max_tokens=100, messages=[ask], tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == PARIS


@UPSTREAMS
def test_an_upstream_thinker_gives_a_thinking_block_then_text(upstream_claude, upstream):
    message = upstream_claude.messages.create(
        model=f"{upstream}-thinker",
        max_tokens=2048,
        messages=[{"role": "user", "content": "2+2?"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "".join(THOUGHT)
    assert text.type == "text" and text.text == "4"
