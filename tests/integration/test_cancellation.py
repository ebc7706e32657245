"""Disconnects stop generation (proved with the engine's own token counter), a full queue is a
429 at once, and a request cancelled while queued never starts."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

LONG = {
    "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
    "max_tokens": 900,
    "logit_bias": {"0": -100, "2": -100},  # SmolLM2's end-of-generation tokens: keep going
    "temperature": 0.8,
}


def raw_request(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def test_stream_disconnect_stops_generation_within_a_few_tokens(server):
    stats = server.backend("smollm2").stats
    cancelled = stats.requests_cancelled
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        with client.stream(
            "POST", "/v1/chat/completions", json={**LONG, "model": "smollm2", "stream": True}
        ) as reply:
            for n, _ in enumerate(reply.iter_lines()):
                if n >= 20:
                    break
        at_close = stats.tokens_generated
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 5), (stats, at_close)
    stopped_at = stats.tokens_generated
    time.sleep(0.3)
    assert stats.tokens_generated == stopped_at  # it really stopped
    assert stopped_at - at_close <= 5  # within about one decode step of the disconnect


def test_non_stream_disconnect_stops_generation(server):
    stats = server.backend("smollm2").stats
    cancelled, started = stats.requests_cancelled, stats.tokens_generated
    sock = raw_request(server.port, {**LONG, "model": "smollm2"})
    assert wait_until(lambda: stats.tokens_generated > started + 5, 10)
    sock.close()
    at_close = stats.tokens_generated
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 5), (stats, at_close)
    assert stats.tokens_generated - at_close <= 5
    assert stats.tokens_generated - started < 900


def test_next_request_starts_at_once_after_a_cancel(server, http):
    stats = server.backend("smollm2").stats
    cancelled, before = stats.requests_cancelled, stats.tokens_generated
    sock = raw_request(server.port, {**LONG, "model": "smollm2"})
    assert wait_until(lambda: stats.tokens_generated > before + 3, 10)
    sock.close()
    started = time.perf_counter()
    reply = http.post(
        "/v1/chat/completions",
        json={"model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 200
    assert stats.requests_cancelled == cancelled + 1
    assert time.perf_counter() - started < 3


@contextlib.contextmanager
def busy_engine(server) -> Iterator[httpx.Client]:
    """A client, while a long stream keeps smollm2-q1 (one request at a time, max_queue 1) busy."""
    with (
        httpx.Client(base_url=server.base_url, timeout=60) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={**LONG, "model": "smollm2-q1", "stream": True}
        ) as running,
    ):
        lines = running.iter_lines()  # kept: a dropped iterator closes the stream (a disconnect)
        next(lines)  # the engine is busy with this one now
        yield client


def test_full_queue_is_429_and_queued_cancel_never_starts(server):
    backend = server.backend("smollm2-q1")
    stats = backend.stats
    started_before = stats.requests_started
    results: dict[str, int] = {}

    with busy_engine(server) as client:
        waiting = raw_request(server.port, {**LONG, "model": "smollm2-q1"})
        assert wait_until(lambda: backend.waiting == 1, 5), "never queued"

        t0 = time.perf_counter()
        full = client.post("/v1/chat/completions", json={**LONG, "model": "smollm2-q1"})
        results["rejected_in_ms"] = int((time.perf_counter() - t0) * 1000)
        assert full.status_code == 429
        assert full.json()["error"]["code"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1

        waiting.close()  # cancelled while queued
        assert wait_until(lambda: backend.waiting == 0, 5), "still queued"
    assert results["rejected_in_ms"] < 1000
    # The running stream was closed too; only it ever started.
    assert wait_until(lambda: stats.requests_cancelled >= 1, 5), stats
    time.sleep(0.2)
    assert stats.requests_started == started_before + 1


def test_one_request_never_cuts_off_another(server):
    """Two concurrent streams on one llama.cpp model both finish whole (queued, not preempted)."""
    outputs: dict[int, tuple[str | None, int]] = {}

    def run(i: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            reply = client.post(
                "/v1/chat/completions",
                json={**LONG, "model": "smollm2", "max_tokens": 40, "seed": i},
            )
            body = reply.json()
            outputs[i] = (body["choices"][0]["finish_reason"], body["usage"]["completion_tokens"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outputs == {i: ("length", 40) for i in range(3)}


def test_disconnect_during_prefill_stops_before_the_prompt_is_done(server):
    """Prompts are evaluated in n_batch slices (16 here) with a stop check between them."""
    stats = server.backend("smollm2-slow-prefill").stats
    prefilled, generated = stats.prefill_tokens, stats.tokens_generated
    prompt = " ".join(f"item{i}" for i in range(300))  # ~1200 tokens
    sock = raw_request(
        server.port,
        {
            "model": "smollm2-slow-prefill",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": prompt}],
        },
    )
    assert wait_until(lambda: stats.prefill_tokens > prefilled + 64, 20)
    sock.close()
    assert wait_until(lambda: stats.requests_cancelled == 1, 10)
    evaluated = stats.prefill_tokens - prefilled
    time.sleep(0.2)
    assert stats.prefill_tokens - prefilled == evaluated
    assert evaluated < 1000
    assert stats.tokens_generated == generated


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"messages": [{"role": "user", "content": "sea " * 1200}]}, "context_length_exceeded"),
        ({"logit_bias": {"999999": 1}}, "invalid_request"),
        ({"max_tokens": 5000}, "context_length_exceeded"),
    ],
)
def test_a_bad_request_is_refused_before_it_queues_behind_a_running_stream(server, extra, code):
    """Checks that need the loaded model (context window, vocabulary) run before queueing: a
    bad request does not wait for another user's generation to end."""
    backend = server.backend("smollm2-q1")
    with busy_engine(server) as client:
        started = backend.stats.requests_started
        t0 = time.perf_counter()
        bad = client.post("/v1/chat/completions", json={**LONG, "model": "smollm2-q1", **extra})
        elapsed = time.perf_counter() - t0
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == code
        assert elapsed < 2.0, f"the 400 came after {elapsed:.1f}s: it waited in the queue"
        assert backend.stats.requests_started == started
