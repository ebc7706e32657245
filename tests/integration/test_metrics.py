"""/metrics and the request log on a real server with real llama.cpp models: scraped with httpx
and parsed with prometheus_client's own parser; `llmgate serve` with `log_format: json`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
COUNT = [{"role": "user", "content": "Count from 1 to 200, one number per line."}]
CAPITAL = [{"role": "user", "content": "Name the capital city of France in one word."}]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    reply = http.get("/metrics")
    assert reply.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def stream_chat(http: httpx.Client, **body: object) -> tuple[list[dict], dict]:
    """The chunks with content and the usage of a streamed chat."""
    chunks: list[dict] = []
    usage: dict = {}
    request = {"stream": True, "stream_options": {"include_usage": True}, **body}
    with http.stream("POST", "/v1/chat/completions", json=request) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                chunks.append(chunk)
    return chunks, usage


def test_a_streamed_chat_is_timed_and_its_tokens_counted(http):
    ttft = "llmgate_time_to_first_token_seconds"
    itl = "llmgate_inter_token_latency_seconds"
    where = {"model": "smollm2", "surface": "chat"}
    before = scrape(http)
    chunks, usage = stream_chat(http, model="default", messages=CAPITAL, temperature=0)
    served = {**where, "status": "200"}

    def observed() -> bool:
        after = scrape(http)
        return value(after, "llmgate_requests_total", **served) > value(
            before, "llmgate_requests_total", **served
        )

    assert wait_until(observed)  # the record is observed just after the response ends
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("llmgate_requests_total", **served) == 1
    assert delta(f"{ttft}_count", **where) == 1 and delta(f"{ttft}_sum", **where) > 0
    gaps = delta(f"{itl}_count", model="smollm2")
    assert 1 <= gaps <= usage["completion_tokens"] - 1
    assert gaps >= len(chunks) - 1
    assert delta("llmgate_prompt_tokens_total", model="smollm2") == usage["prompt_tokens"]
    assert delta("llmgate_completion_tokens_total", model="smollm2") == usage["completion_tokens"]
    assert delta("llmgate_request_duration_seconds_count", **where) == 1


def test_prompt_tokens_read_from_the_prefix_cache_are_counted(http):
    # long enough (> 64 tokens) that a free slot starts from a copy of the cached prefix
    story = "The lighthouse keeper counted the ships that passed the rocks each night. " * 6
    messages = [{"role": "user", "content": f"{time.time_ns()} {story} Say hello."}]
    body = {"model": "smollm2", "messages": messages, "max_tokens": 4, "temperature": 0}
    assert http.post("/v1/chat/completions", json=body).status_code == 200  # fills the cache
    before = scrape(http)
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    cached = reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 64  # the same prompt again: all but its last token come from the cache
    name = "llmgate_prompt_tokens_cached_total"

    def counted() -> float:
        return value(scrape(http), name, model="smollm2") - value(before, name, model="smollm2")

    assert wait_until(lambda: counted() > 0)
    assert counted() == cached


def test_engine_gauges_while_a_stream_is_running(http):
    body = {
        "model": "smollm2",
        "messages": COUNT,
        "temperature": 0,
        "max_tokens": 400,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        lines = reply.iter_lines()  # held: a dropped iterator closes the response
        next(line for line in lines if '"content"' in line)
        during = scrape(http)
    assert value(during, "llmgate_requests_in_flight", model="smollm2") == 1
    assert value(during, "llmgate_batch_size", model="smollm2") == 1
    assert value(during, "llmgate_queue_depth", model="smollm2") == 0
    assert value(during, "llmgate_model_loaded", model="smollm2", backend="llama_cpp") == 1
    assert value(during, "llmgate_model_state", model="smollm2", state="ok") == 1
    assert value(during, "llmgate_model_load_seconds", model="smollm2") > 0
    # closing the stream ended the request and the engine's work
    assert wait_until(
        lambda: value(scrape(http), "llmgate_requests_in_flight", model="smollm2") == 0
    )
    assert wait_until(lambda: value(scrape(http), "llmgate_batch_size", model="smollm2") == 0)


def test_the_request_log_names_the_request_id_and_the_usage(http, caplog):
    caplog.set_level(logging.INFO, logger="llmgate.requests")
    request = {"model": "smollm2", "messages": CAPITAL, "temperature": 0}
    reply = http.post("/v1/chat/completions", json=request, headers={"X-Request-ID": "it-42"})
    assert reply.headers["x-request-id"] == "it-42"
    usage = reply.json()["usage"]

    def line() -> str | None:
        found = [r.getMessage() for r in caplog.records if "request_id=it-42" in r.getMessage()]
        return found[0] if found else None

    assert wait_until(lambda: line() is not None)
    text = line()
    assert text.startswith("POST /v1/chat/completions 200 request_id=it-42 ")
    assert "model=smollm2 backend=llama_cpp" in text
    assert f"prompt_tokens={usage['prompt_tokens']}" in text
    assert f"completion_tokens={usage['completion_tokens']}" in text
    assert "Paris" not in text and "capital" not in text


def test_serve_with_json_logs_writes_only_json_lines(tiny_gguf, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "server:\n  log_format: json\n"
        f"models:\n  - name: tiny\n    backend: llama_cpp\n    source: {tiny_gguf}\n"
        "    n_threads: 1\n"
    )
    with httpx.Client() as probe:
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert _wait_ready(probe, base, proc), "server did not become ready"
            chat = {"model": "tiny", "max_tokens": 4, "messages": CAPITAL}
            reply = probe.post(f"{base}/v1/chat/completions", json=chat, timeout=60)
            assert reply.status_code == 200
        finally:
            proc.send_signal(signal.SIGINT)
            output = proc.communicate(timeout=30)[0]
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert proc.returncode == 0
    [request] = [x for x in lines if x.get("request_id") == reply.headers["x-request-id"]]
    assert (request["logger"], request["status"], request["model"]) == (
        "llmgate.requests",
        200,
        "tiny",
    )
    assert request["completion_tokens"] == reply.json()["usage"]["completion_tokens"]
    assert any(x["logger"].startswith("uvicorn") for x in lines)  # uvicorn's lines too


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(probe: httpx.Client, base: str, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if probe.get(f"{base}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
