"""Request limits over a real socket: a body over server.max_body_bytes is a 413 whether it
announces its length or streams in chunks without one (the server never reads the rest)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.fakes import fake_factory
from tests.integration.conftest import ServerThread
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.integration


@pytest.fixture
def base_url() -> Iterator[str]:
    config = GatewayConfig(server=ServerSettings(max_body_bytes=4096), models=[fake_entry("alpha")])
    thread = ServerThread(create_app(config, backend_factory=fake_factory()))
    thread.start()
    yield f"http://127.0.0.1:{thread.port}"
    thread.stop()


def test_a_large_body_with_content_length_is_a_413(base_url):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "x" * 10_000}]}
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    small = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{base_url}/v1/chat/completions", json=small, timeout=10).status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit(base_url):
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 1024
        try:
            for _ in range(8):  # 8 KiB, never terminated: the answer cannot wait for the end
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the last chunks: what this test wants
        answer = b""
        while b"request_too_large" not in answer:  # the server closes after its answer
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # the reset comes after the answer already queued
                break
            if not data:
                break
            answer += data
        head = answer.decode("latin-1")
    status_line, _, rest = head.partition("\r\n")
    assert status_line == "HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(rest.split("\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"
