"""An upstream that closes a connection without answering, at the socket level: a real gateway
on a real port in front of ``DroppingUpstream``, a test double of an OpenAI-compatible server
written on raw sockets (an ASGI app cannot close without answering).

- A connection the upstream closes as it is reused (its idle keep-alive ran out as the gateway
  sent the next request) is retried once on a new connection: the client never sees it.
- An upstream that closes every connection without answering is a 502 ``upstream_error`` that
  says so, not a timeout (nothing timed out).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator

import httpx
import pytest

from backends.upstream.settings import OpenAICompatSettings, UpstreamTimeouts
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import RunningServer, ServerThread

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class DroppingUpstream:
    """Answers the first ``answered`` requests of each connection (keeping it alive), then
    reads the next one and closes the connection without a word. ``answered=0``: every request
    is dropped. Counts what it answered and dropped."""

    def __init__(self, answered: int) -> None:
        self.answered_per_connection = answered
        self.answered = 0
        self.dropped = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DroppingUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if served >= self.answered_per_connection:
                    self.dropped += 1
                    break
                body = json.dumps(ANSWER).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                served += 1
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


def gateway_over(port: int) -> tuple[ServerThread, RunningServer]:
    settings = OpenAICompatSettings(
        name="m",
        backend="openai",
        base_url=[f"http://127.0.0.1:{port}/v1"],
        upstream_model="m",
        timeouts=UpstreamTimeouts(connect=2, first_byte=5, idle=5, total=10),
        health_check_interval=0,
        failure_threshold=1000,
        cooldown=0,
    )
    app = create_app(GatewayConfig(models=[settings]))
    thread = ServerThread(app)
    thread.start()
    return thread, RunningServer(
        app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port
    )


@pytest.fixture
def behind(request: pytest.FixtureRequest) -> Iterator[tuple[DroppingUpstream, RunningServer]]:
    """A gateway in front of a ``DroppingUpstream`` that answers ``request.param`` requests
    a connection."""
    with DroppingUpstream(answered=request.param) as upstream:
        thread, server = gateway_over(upstream.port)
        yield upstream, server
        thread.stop()


@pytest.mark.parametrize("behind", [1], indirect=True)
def test_a_kept_alive_connection_closed_as_it_is_reused_is_retried_unseen(behind):
    upstream, server = behind
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for _ in range(3):
            reply = http.post("/v1/chat/completions", json={"model": "m", "messages": HI})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "hello"
    assert upstream.answered >= 3 and upstream.dropped >= 2  # each reuse met a closed socket


@pytest.mark.parametrize("behind", [0], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_closes_without_answering_is_a_502_not_a_timeout(behind, stream):
    upstream, server = behind
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        reply = http.post(
            "/v1/chat/completions", json={"model": "m", "messages": HI, "stream": stream}
        )
    assert reply.status_code == 502, reply.text
    error = reply.json()["error"]
    assert error["code"] == "upstream_error"
    assert "closed the connection without answering" in error["message"]
    assert upstream.dropped == 2  # tried twice: once more on a new connection
