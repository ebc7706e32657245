"""Upstream backends end to end: the real gateway on a real port relaying to protocol-faithful
fake Ollama / OpenAI servers on loopback, driven by the openai SDK and LangChain, with faults
injected (refused, 5xx, 429, hang, death mid-stream, stalls, error lines)."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai import OpenAI

from backends.llama_cpp.settings import LlamaCppSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings, UpstreamTimeouts
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI, Fault, closed_port
from tests.integration.conftest import RunningServer, ServerThread, wait_until

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Say hello"}]
TOOL = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}


def serve(app) -> ServerThread:
    thread = ServerThread(app)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def ollama_a() -> Iterator[tuple[FakeOllama, str]]:
    fake = FakeOllama(
        [
            FakeModel("llama3:8b"),
            FakeModel("tooly:1b", tool_call=TOOL),
            FakeModel("slow:1b", tokens=["tok "] * 400, token_delay=0.02),
            FakeModel("quiet:1b", report_counts=False),
        ]
    )
    thread = serve(fake)
    yield fake, f"http://127.0.0.1:{thread.port}"
    thread.stop()


@pytest.fixture(scope="module")
def ollama_b() -> Iterator[tuple[FakeOllama, str]]:
    fake = FakeOllama([FakeModel("llama3:8b")])
    thread = serve(fake)
    yield fake, f"http://127.0.0.1:{thread.port}"
    thread.stop()


@pytest.fixture(scope="module")
def vllm() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(
        [FakeModel("org/remote-8b"), FakeModel("slow", tokens=["t "] * 400, token_delay=0.02)],
        api_key="upstream-key",
    )
    thread = serve(fake)
    yield fake, f"http://127.0.0.1:{thread.port}/v1"
    thread.stop()


@pytest.fixture(scope="module")
def gateway(ollama_a, ollama_b, vllm, tiny_gguf) -> Iterator[RunningServer]:
    a, b, v = ollama_a[1], ollama_b[1], vllm[1]
    quick = UpstreamTimeouts(connect=1, first_byte=1.0, idle=0.5, total=5)
    common = {"health_check_interval": 0}
    models = [
        OllamaSettings(
            name="llama3",
            backend="ollama",
            base_url=[a, b],
            upstream_model="llama3:8b",
            failure_threshold=2,
            cooldown=60,
            **common,
        ),
        OllamaSettings(
            name="solo",
            backend="ollama",
            base_url=[a],
            upstream_model="llama3:8b",
            num_ctx=64,
            keep_alive="5m",
            timeouts=quick,
            **common,
        ),
        OllamaSettings(
            name="tooly", backend="ollama", base_url=[a], upstream_model="tooly:1b", **common
        ),
        OllamaSettings(
            name="slow-ollama", backend="ollama", base_url=[a], upstream_model="slow:1b", **common
        ),
        OllamaSettings(
            name="quiet", backend="ollama", base_url=[a], upstream_model="quiet:1b", **common
        ),
        OllamaSettings(
            name="ghost", backend="ollama", base_url=[a], upstream_model="ghost:1b", **common
        ),
        OllamaSettings(
            name="down",
            backend="ollama",
            base_url=[f"http://127.0.0.1:{closed_port()}"],
            fallbacks=["tiny"],
            **common,
        ),
        OllamaSettings(
            name="down-alone",
            backend="ollama",
            base_url=[f"http://127.0.0.1:{closed_port()}"],
            **common,
        ),
        OpenAICompatSettings(
            name="vllm",
            backend="openai",
            base_url=[v],
            upstream_model="org/remote-8b",
            api_key="upstream-key",
            timeouts=quick,
            **common,
        ),
        OpenAICompatSettings(
            name="slow-vllm",
            backend="openai",
            base_url=[v],
            upstream_model="slow",
            api_key="upstream-key",
            **common,
        ),
        OpenAICompatSettings(
            name="vllm-badkey",
            backend="openai",
            base_url=[v],
            upstream_model="org/remote-8b",
            api_key="wrong",
            **common,
        ),
        LlamaCppSettings(name="tiny", backend="llama_cpp", source=str(tiny_gguf), n_threads=1),
    ]
    app = create_app(GatewayConfig(models=models))
    thread = serve(app)
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture
def client(gateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.v1, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(autouse=True)
def clean_state(gateway, ollama_a, ollama_b, vllm):
    """Each test starts with no pending faults and every replica in good standing."""
    for fake, _ in (ollama_a, ollama_b, vllm):
        fake.reset()
    for route in gateway.app.state.router.preloaded():
        pool = getattr(getattr(route.backend, "client", None), "pool", None)
        for replica in pool.replicas if pool else []:
            pool.record_success(replica)


def sse_events(reply: httpx.Response) -> list[str]:
    return [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]


# -- Ollama ---------------------------------------------------------------------------------


def test_ollama_chat_through_the_openai_sdk(client, ollama_a):
    reply = client.chat.completions.create(
        model="solo",
        messages=HI,
        temperature=0.2,
        top_p=0.9,
        seed=3,
        max_tokens=50,
        stop=["zz"],
    )
    assert reply.choices[0].message.content == "Hello from fake ollama."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "solo"
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 5
    sent = ollama_a[0].chat_bodies[-1]
    assert sent["model"] == "llama3:8b" and sent["stream"] is True and sent["truncate"] is False
    assert sent["keep_alive"] == "5m"
    assert sent["options"] == {
        "num_predict": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["zz"],
        "num_ctx": 64,
    }


def test_ollama_stream_with_usage_and_length_finish(client):
    stream = client.chat.completions.create(
        model="solo",
        messages=HI,
        stream=True,
        max_completion_tokens=2,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2


def test_the_ollama_clients_num_ctx_reaches_an_ollama_upstream_unless_the_entry_sets_one(
    gateway, ollama_a
):
    """The Ollama surface's ``options.num_ctx`` is Ollama's own: an entry without a window
    passes it on (the upstream would otherwise cut a long prompt to its default window); an
    entry's ``num_ctx`` wins, and a larger ask is a 400."""
    body = {"messages": HI, "stream": False, "options": {"num_ctx": 3000}}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        reply = http.post("/api/chat", json={**body, "model": "tooly"})
        assert reply.status_code == 200, reply.text
        assert ollama_a[0].chat_bodies[-1]["options"]["num_ctx"] == 3000
        small = {**body, "options": {"num_ctx": 32}}
        assert http.post("/api/chat", json={**small, "model": "solo"}).status_code == 200
        assert ollama_a[0].chat_bodies[-1]["options"]["num_ctx"] == 64
        reply = http.post("/api/chat", json={**body, "model": "solo"})
        assert reply.status_code == 400 and "num_ctx" in reply.json()["error"]


def test_ollama_absent_counts_are_handled(client):
    reply = client.chat.completions.create(model="quiet", messages=HI)
    assert reply.usage.prompt_tokens == 0
    assert reply.usage.completion_tokens == 5


def test_ollama_tool_calls_become_openai_tool_calls(client, ollama_a):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.completions.create(model="tooly", messages=HI, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}
    assert ollama_a[0].chat_bodies[-1]["tools"] == tools
    stream = list(
        client.chat.completions.create(model="tooly", messages=HI, tools=tools, stream=True)
    )
    deltas = [
        c.choices[0].delta.tool_calls for c in stream if c.choices and c.choices[0].delta.tool_calls
    ]
    assert deltas[0][0].index == 0 and isinstance(deltas[0][0].function.arguments, str)


def test_ollama_json_format(client, ollama_a):
    reply = client.chat.completions.create(
        model="solo", messages=HI, response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content) == {"answer": "fake"}
    assert ollama_a[0].chat_bodies[-1]["format"] == "json"


def test_ollama_context_overflow_is_400_not_silent_truncation(client):
    long = [{"role": "user", "content": "word " * 200}]  # > num_ctx 64
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="solo", messages=long)
    assert info.value.body["code"] == "context_length_exceeded"
    assert "64" in info.value.body["message"]


def test_ollama_missing_upstream_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="ghost", messages=HI)
    assert "ollama pull ghost:1b" in info.value.body["message"]


def test_ollama_error_line_mid_stream_is_an_error_frame(gateway, ollama_a):
    ollama_a[0].faults.append(Fault("error_line", after=2, message="runner crashed"))
    with (
        httpx.Client(base_url=gateway.base_url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": "solo", "messages": HI, "stream": True}
        ) as reply,
    ):
        events = sse_events(reply)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_error" and "runner crashed" in error["message"]
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert contents == ["Hello", " from"]


def test_langchain_through_ollama(gateway):
    llm = ChatOpenAI(
        base_url=gateway.v1, api_key="x", model="solo", stream_usage=True, max_retries=0
    )
    assert llm.invoke("hello").content == "Hello from fake ollama."
    chunks = list(llm.stream("hello"))
    assert "".join(c.content for c in chunks) == "Hello from fake ollama."
    assert next(c.usage_metadata for c in chunks if c.usage_metadata)["output_tokens"] == 5


# -- OpenAI-compatible ------------------------------------------------------------------------


def test_openai_relay_non_stream_rewrites_model_and_forwards_extras(client, vllm):
    reply = client.chat.completions.create(
        model="vllm",
        messages=HI,
        temperature=0,
        extra_body={"repetition_penalty": 1.1},
    )
    assert reply.model == "vllm"
    assert reply.choices[0].message.content == "Hello from fake openai."
    recorded = vllm[0].requests[-1]
    assert recorded.headers["authorization"] == "Bearer upstream-key"
    assert recorded.body["model"] == "org/remote-8b"
    assert recorded.body["repetition_penalty"] == 1.1


def test_openai_relay_stream_keeps_usage_only_when_asked(client):
    with_usage = list(
        client.chat.completions.create(
            model="vllm", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 5
    assert {c.model for c in with_usage} == {"vllm"}
    without = list(client.chat.completions.create(model="vllm", messages=HI, stream=True))
    assert all(c.choices for c in without)
    assert "".join(c.choices[0].delta.content or "" for c in without) == "Hello from fake openai."


def test_an_openai_relay_stream_is_metered_though_the_client_asked_no_usage(gateway, vllm, caplog):
    """The upstream is always asked for usage (else token limits and logs see nothing of a
    stream); a client that did not ask gets neither the usage chunk nor ``usage: null``."""
    caplog.set_level(logging.INFO, logger="llmgate.requests")
    body = {"model": "vllm", "messages": HI, "stream": True}
    with httpx.Client(base_url=gateway.base_url) as http:
        reply = http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "unasked"})
    assert vllm[0].requests[-1].body["stream_options"] == {"include_usage": True}
    payloads = [e[6:] for e in reply.text.split("\n\n") if e.startswith("data: {")]
    assert payloads and all('"usage"' not in p for p in payloads)

    def line() -> str | None:
        found = [r.getMessage() for r in caplog.records if "request_id=unasked " in r.getMessage()]
        return found[0] if found else None

    assert wait_until(lambda: line() is not None)
    assert " completion_tokens=5 " in line(), line()


def test_langchain_through_openai_relay(gateway):
    llm = ChatOpenAI(base_url=gateway.v1, api_key="x", model="vllm", max_retries=0)
    assert llm.invoke("hello").content == "Hello from fake openai."
    assert llm.batch(["a", "b"])[1].content == "Hello from fake openai."


def test_openai_upstream_400_keeps_its_message(gateway, vllm):
    vllm[0].faults.append(Fault("status", status=400, message="max_tokens is too large: 99999"))
    with httpx.Client(base_url=gateway.base_url) as http:
        reply = http.post("/v1/chat/completions", json={"model": "vllm", "messages": HI})
    assert reply.status_code == 400
    assert "max_tokens is too large" in reply.json()["error"]["message"]


def test_openai_upstream_bad_credentials_are_502(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="vllm-badkey", messages=HI)
    assert info.value.status_code == 502
    assert "api_key" in info.value.body["message"]


# -- faults, pools, fallbacks, timeouts, disconnects -------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault("status", status=500), 502, "upstream_error"),
        (Fault("status", status=429, retry_after="3"), 429, "rate_limit_exceeded"),
        (Fault("status", status=503), 503, "backend_unavailable"),
        # past `total` (5 s): a whole relayed answer waits for `total`, a stream `first_byte`
        (Fault("hang_before_headers", seconds=6), 504, "backend_timeout"),
        (Fault("die_mid_stream", after=0), 502, "upstream_error"),
    ],
)
@pytest.mark.parametrize("model", ["solo", "vllm"])
def test_upstream_faults_before_first_byte_map_to_status(
    gateway, ollama_a, vllm, fault, status, code, model
):
    fake = ollama_a[0] if model == "solo" else vllm[0]
    for stream in (False, True):
        fake.faults.append(Fault(**{**fault.__dict__}))
        with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
            reply = http.post(
                "/v1/chat/completions", json={"model": model, "messages": HI, "stream": stream}
            )
        assert reply.status_code == status, reply.text
        assert reply.json()["error"]["code"] == code


@pytest.mark.parametrize("model", ["solo", "vllm"])
def test_the_upstreams_retry_after_is_passed_on_when_it_is_later(gateway, ollama_a, vllm, model):
    fake = ollama_a[0] if model == "solo" else vllm[0]
    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    cases = [
        (Fault("status", status=429, retry_after="17"), 429, {"17"}),
        (Fault("status", status=503, retry_after=in_30_s), 503, {"29", "30", "31"}),
        (Fault("status", status=429, retry_after="soon"), 429, {"1"}),  # unreadable: ours
    ]
    for fault, status, retry_after in cases:
        fake.faults.append(fault)
        with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
            reply = http.post("/v1/chat/completions", json={"model": model, "messages": HI})
        assert reply.status_code == status, reply.text
        assert reply.headers["retry-after"] in retry_after


def test_a_whole_answer_may_take_longer_than_first_byte_and_idle(gateway, vllm):
    """A non-streamed answer sends nothing until it is done: `total` bounds it, not
    `first_byte` (1 s here) or `idle` (0.5 s), which a long generation would pass."""
    vllm[0].faults.append(Fault("hang_before_headers", seconds=2))
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        reply = http.post("/v1/chat/completions", json={"model": "vllm", "messages": HI})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]


def test_refused_connection_is_503(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="down-alone", messages=HI)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "backend_unavailable"


def test_unavailable_upstream_falls_back_to_the_local_model(gateway):
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        reply = http.post(
            "/v1/chat/completions", json={"model": "down", "messages": HI, "max_tokens": 3}
        )
        streamed = http.post(
            "/v1/chat/completions",
            json={"model": "down", "messages": HI, "max_tokens": 3, "stream": True},
        )
    assert reply.status_code == 200 and reply.headers["x-llmgate-model"] == "tiny"
    assert reply.json()["model"] == "down"
    assert streamed.headers["x-llmgate-model"] == "tiny"


def test_failing_replica_is_retried_on_the_other_then_cooled_down(gateway, ollama_a, ollama_b):
    ollama_a[0].faults.append(Fault("status", status=500, sticky=True))
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
            for _ in range(6):
                reply = http.post("/v1/chat/completions", json={"model": "llama3", "messages": HI})
                assert reply.status_code == 200
                assert reply.headers["x-llmgate-replica"] == ollama_b[1]
        # failure_threshold=2: after two failures replica A is skipped during its cool-down
        assert len(ollama_a[0].chat_bodies) == 2
        assert len(ollama_b[0].chat_bodies) == 6
    finally:
        ollama_a[0].faults.clear()


def test_a_request_that_makes_the_upstream_answer_500_does_not_cool_it_down(gateway, vllm):
    """A 500 with the upstream's own error body (llama-server's answer to an image it cannot
    read) fails that request; repeating it must not take the model down for everyone."""
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        for _ in range(4):  # past failure_threshold (3)
            vllm[0].faults.append(
                Fault("status", status=500, message="image input is not supported")
            )
            reply = http.post("/v1/chat/completions", json={"model": "vllm", "messages": HI})
            assert reply.status_code == 502
            assert "image input is not supported" in reply.json()["error"]["message"]
        reply = http.post("/v1/chat/completions", json={"model": "vllm", "messages": HI})
    assert reply.status_code == 200


def test_equally_idle_replicas_take_turns(gateway, ollama_a, ollama_b):
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        served = [
            http.post("/v1/chat/completions", json={"model": "llama3", "messages": HI}).headers[
                "x-llmgate-replica"
            ]
            for _ in range(6)
        ]
    assert set(served) == {ollama_a[1], ollama_b[1]}


@pytest.mark.parametrize(("model", "fake_index"), [("solo", 0), ("vllm", 2)])
def test_death_or_stall_mid_stream_is_an_error_frame(
    gateway, ollama_a, ollama_b, vllm, model, fake_index
):
    fake = (ollama_a, ollama_b, vllm)[fake_index][0]
    for fault, code in (
        (Fault("die_mid_stream", after=2), "upstream_error"),
        (Fault("slow_chunks", seconds=2), "backend_timeout"),
    ):
        fake.faults.append(fault)
        with (
            httpx.Client(base_url=gateway.base_url, timeout=10) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": model, "messages": HI, "stream": True},
            ) as reply,
        ):
            assert reply.status_code == 200
            events = sse_events(reply)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == code


@pytest.mark.parametrize(("model", "fake_index"), [("slow-ollama", 0), ("slow-vllm", 2)])
def test_client_disconnect_closes_the_upstream_request_promptly(
    gateway, ollama_a, vllm, model, fake_index
):
    fake = (ollama_a, None, vllm)[fake_index][0]
    with (
        httpx.Client(base_url=gateway.base_url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": model, "messages": HI, "stream": True}
        ) as reply,
    ):
        for n, _ in enumerate(reply.iter_lines()):
            if n > 6:
                break
    closed_at = time.monotonic()
    assert wait_until(lambda: len(fake.disconnects) == 1, 5)
    delay = fake.disconnects[0].at - closed_at
    assert delay < 0.5, f"upstream noticed after {delay:.3f}s"
    assert fake.disconnects[0].sent < 100  # far from the 400 tokens it would have sent


def test_health_reports_an_unreachable_upstream_as_degraded(gateway):
    backend = gateway.backend("down")
    for replica in backend.client.pool.replicas:
        backend.client.pool.record_health(replica, ok=False)
    reply = httpx.get(f"{gateway.base_url}/health")
    assert reply.status_code == 200
    assert reply.json()["status"] == "degraded"
    assert reply.json()["models"]["down"]["status"] == "degraded"
    for replica in backend.client.pool.replicas:
        backend.client.pool.record_health(replica, ok=True)
