"""The fault run: a real gateway on a real port in front of the fake Ollama and OpenAI upstreams
(``tests/fake_upstreams.py``), each upstream failing in every way it can (connection refused,
500, 429, a hang before the headers, death before and during the body, a stall mid-stream, an
error line), asked through every surface that streams (OpenAI chat SSE, Responses, Anthropic
Messages, Ollama NDJSON), streaming and not.

The contract: every client gets a well-formed answer or a well-formed error (the surface's
envelope and the fault's status before the first byte; the surface's error frame after it),
within the upstream deadlines (nothing hangs), and the gateway still answers ``/health`` and a
normal request afterwards. Redis dying mid-run is the rate limits' fault test.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from backends.upstream.settings import OllamaSettings, OpenAICompatSettings, UpstreamTimeouts
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI, Fault, closed_port
from tests.integration.conftest import RunningServer, ServerThread, wait_until

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Say hello"}]
# The gateway's deadlines here, and the client's: well above them, so a hang is a failure.
DEADLINES = UpstreamTimeouts(connect=1, first_byte=1.0, idle=0.5, total=5)
CLIENT_TIMEOUT = 20.0
SLOWEST_ANSWER = 8.0  # seconds: the total deadline and then some


@dataclass(frozen=True)
class Ask:
    """One way to ask: a surface's route, whether it streams, and its body."""

    surface: str  # openai | responses | anthropic | ollama
    stream: bool

    @property
    def path(self) -> str:
        return {
            "openai": "/v1/chat/completions",
            "responses": "/v1/responses",
            "anthropic": "/v1/messages",
            "ollama": "/api/chat",
        }[self.surface]

    def body(self, model: str) -> dict[str, Any]:
        if self.surface == "responses":
            return {"model": model, "input": "Say hello", "stream": self.stream}
        if self.surface == "anthropic":
            return {"model": model, "max_tokens": 16, "messages": HI, "stream": self.stream}
        return {"model": model, "messages": HI, "stream": self.stream}

    def __str__(self) -> str:
        return f"{self.surface}-{'stream' if self.stream else 'whole'}"


SURFACES = ("openai", "responses", "anthropic", "ollama")
ASKS = [Ask(surface, stream) for surface in SURFACES for stream in (False, True)]


@dataclass(frozen=True)
class Outcome:
    """What the client got: ``answer`` (complete) or ``error`` (with the HTTP status, which is
    200 for an error that came as a stream's error frame)."""

    kind: str
    status: int
    streamed: bool
    detail: str = ""


def _sse(text: str) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        name = None
        data = []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def _error_body(surface: str, body: Any) -> str:
    """Checks ``body`` is the surface's error envelope; returns its message."""
    if surface == "ollama":
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], str) and body["error"], body
        return body["error"]
    if surface == "anthropic":
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        return str(body["error"]["message"])
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return str(body["error"]["code"])


def _streamed(ask: Ask, text: str) -> Outcome:
    if ask.surface == "ollama":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert lines, "an empty NDJSON stream"
        last = lines[-1]
        if "error" in last:
            return Outcome("error", 200, True, _error_body("ollama", last))
        assert last["done"] is True and all(not line["done"] for line in lines[:-1]), lines
        return Outcome("answer", 200, True)
    events = _sse(text)
    assert events, "an empty event stream"
    if ask.surface == "openai":
        assert events[-1][1] == "[DONE]", events[-3:]
        chunks = [json.loads(data) for _, data in events[:-1]]
        if chunks and "error" in chunks[-1]:
            return Outcome("error", 200, True, _error_body("openai", chunks[-1]))
        assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks), chunks
        return Outcome("answer", 200, True)
    if ask.surface == "anthropic":
        name, data = events[-1]
        if name == "error":
            return Outcome("error", 200, True, _error_body("anthropic", json.loads(data)))
        assert events[0][0] == "message_start" and name == "message_stop", events
        return Outcome("answer", 200, True)
    names = [name for name, _ in events]
    if names[-1] == "response.failed":
        error = json.loads(events[-2][1])
        assert names[-2] == "error" and {"code", "message"} <= set(error), events[-2:]
        return Outcome("error", 200, True, str(error["code"]))
    assert names[0] == "response.created" and names[-1] == "response.completed", names
    return Outcome("answer", 200, True)


def outcome(ask: Ask, reply: httpx.Response) -> Outcome:
    """What ``reply`` is; fails the test if it is neither a well-formed answer nor error."""
    content_type = reply.headers.get("content-type", "")
    if reply.status_code != 200:
        assert content_type.startswith("application/json"), (reply.status_code, reply.text)
        return Outcome("error", reply.status_code, False, _error_body(ask.surface, reply.json()))
    if ask.stream:
        return _streamed(ask, reply.text)
    body = reply.json()
    if ask.surface == "openai":
        assert body["choices"][0]["message"]["content"] and body["choices"][0]["finish_reason"]
    elif ask.surface == "responses":
        assert body["status"] == "completed" and body["output"], body
    elif ask.surface == "anthropic":
        assert body["type"] == "message" and body["stop_reason"], body
    else:
        assert body["done"] is True and body["message"]["content"], body
    return Outcome("answer", 200, False)


def ask_gateway(base_url: str, ask: Ask, model: str) -> tuple[Outcome, float]:
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as http:
        reply = http.post(ask.path, json=ask.body(model))
    return outcome(ask, reply), time.monotonic() - started


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, tuple[FakeOllama | FakeOpenAI, str]]]:
    ollama = FakeOllama([FakeModel("llama3:8b")])
    vllm = FakeOpenAI([FakeModel("org/remote-8b")])
    threads = {name: ServerThread(fake) for name, fake in (("ollama", ollama), ("openai", vllm))}
    for thread in threads.values():
        thread.start()
    yield {
        "ollama": (ollama, f"http://127.0.0.1:{threads['ollama'].port}"),
        "openai": (vllm, f"http://127.0.0.1:{threads['openai'].port}/v1"),
    }
    for thread in threads.values():
        thread.stop()


@pytest.fixture(scope="module")
def gateway(fakes) -> Iterator[RunningServer]:
    # A failing replica is never cooled down here: each request meets its own fault.
    common: dict[str, Any] = {
        "timeouts": DEADLINES,
        "health_check_interval": 0,
        "failure_threshold": 1000,
        "cooldown": 0,
    }
    refused = f"http://127.0.0.1:{closed_port()}"
    models = [
        OllamaSettings(
            name="ollama", backend="ollama", base_url=[fakes["ollama"][1]],
            upstream_model="llama3:8b", **common,
        ),
        OllamaSettings(name="ollama-refused", backend="ollama", base_url=[refused], **common),
        OpenAICompatSettings(
            name="openai", backend="openai", base_url=[fakes["openai"][1]],
            upstream_model="org/remote-8b", **common,
        ),
        OpenAICompatSettings(
            name="openai-refused", backend="openai", base_url=[f"{refused}/v1"], **common
        ),
    ]  # fmt: skip
    app = create_app(GatewayConfig(models=models))
    thread = ServerThread(app)
    thread.start()
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture(autouse=True)
def clean_fakes(fakes) -> None:
    for fake, _ in fakes.values():
        fake.reset()


# fault -> (the statuses a stream may get, the status a whole answer gets): 200 is an error
# frame after the first byte. A stall may come before a surface's first byte (the OpenAI
# upstream's first chunk is the role alone, which the Ollama surface has no line for): a 504.
FAULTS: dict[str, tuple[Fault | None, set[int], int]] = {
    "refused": (None, {503}, 503),
    "status-500": (Fault("status", status=500), {502}, 502),
    "status-429": (Fault("status", status=429, retry_after="2"), {429}, 429),
    # past `total`: a whole answer relayed as such is bounded by `total` only (it sends
    # nothing until it is done), a stream by `first_byte`
    "hang-before-headers": (Fault("hang_before_headers", seconds=6), {504}, 504),
    "dies-before-body": (Fault("die_mid_stream", after=0), {502}, 502),
    "dies-mid-stream": (Fault("die_mid_stream", after=2), {200}, 502),
    "stalls-mid-stream": (Fault("slow_chunks", seconds=2), {200, 504}, 504),
    "error-line": (Fault("error_line", after=2, message="CUDA out of memory"), {200}, 502),
}


def assert_still_serving(base_url: str, model: str) -> None:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as http:
        assert http.get("/health").status_code == 200
    for ask in (Ask("openai", False), Ask("ollama", True)):
        got, _ = ask_gateway(base_url, ask, model)
        assert got.kind == "answer", (ask, got)


@pytest.mark.parametrize("upstream", ["ollama", "openai"])
@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("ask", ASKS, ids=str)
def test_every_client_gets_a_well_formed_error_in_time_and_the_server_survives(
    gateway, fakes, upstream: str, fault_name: str, ask: Ask
) -> None:
    fault, stream_statuses, whole_status = FAULTS[fault_name]
    model = upstream
    if fault is None:
        model = f"{upstream}-refused"
    else:
        fakes[upstream][0].faults.append(replace(fault))
    got, took = ask_gateway(gateway.base_url, ask, model)
    assert got.kind == "error", got
    assert got.status in (stream_statuses if ask.stream else {whole_status}), got
    assert got.streamed == (got.status == 200)
    assert took < SLOWEST_ANSWER, f"{ask} {fault_name}: {took:.1f}s"
    assert not fakes[upstream][0].faults, "the fault was never met"
    assert_still_serving(gateway.base_url, upstream)


def test_a_burst_of_mixed_faults_and_answers_all_end_well_formed(gateway, fakes) -> None:
    """64 concurrent clients over every surface while faults are met at random: each gets an
    answer or a well-formed error in time, nothing is left running, and the gateway serves as
    before."""
    rng = random.Random(13)
    jobs = []
    for i in range(64):
        upstream = rng.choice(["ollama", "openai"])
        fault = FAULTS[rng.choice(list(FAULTS))][0]
        model = upstream
        if i % 2 and fault is None:
            model = f"{upstream}-refused"
        elif i % 2 and fault is not None:
            fakes[upstream][0].faults.append(replace(fault))
        jobs.append((rng.choice(ASKS), model))
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda job: ask_gateway(gateway.base_url, *job), jobs))
    assert max(took for _, took in results) < SLOWEST_ANSWER
    assert {got.kind for got, _ in results} == {"answer", "error"}
    # nothing left running: the gateway's requests in flight and the upstreams' replies
    activity = gateway.app.state.router.activity
    names = ("ollama", "openai", "ollama-refused", "openai-refused")
    assert wait_until(lambda: all(activity.in_flight(name) == 0 for name in names), 5)
    assert wait_until(lambda: all(fake.in_flight == 0 for fake, _ in fakes.values()), 5)
    for fake, _ in fakes.values():
        fake.faults.clear()
    for upstream in ("ollama", "openai"):
        assert_still_serving(gateway.base_url, upstream)


@pytest.mark.parametrize("ask", [a for a in ASKS if a.stream], ids=str)
def test_a_stream_that_fails_after_it_started_is_logged_with_its_error(
    gateway, fakes, ask: Ask, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="llmgate.requests")
    fakes["openai"][0].faults.append(Fault("die_mid_stream", after=2))
    request_id = f"dies-{ask}"
    with httpx.Client(base_url=gateway.base_url, timeout=CLIENT_TIMEOUT) as http:
        reply = http.post(ask.path, json=ask.body("openai"), headers={"X-Request-ID": request_id})
    assert outcome(ask, reply).kind == "error"

    def line() -> str | None:
        tag = f"request_id={request_id} "
        found = [r.getMessage() for r in caplog.records if tag in r.getMessage()]
        return found[0] if found else None

    assert wait_until(lambda: line() is not None)
    assert f"{ask.path} 200 " in line() and " error=upstream_error " in line(), line()
