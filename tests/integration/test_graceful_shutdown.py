"""SIGTERM for real: `python -m gateway serve` in front of a slow fake upstream, two streams in
flight. The listener closes at once (new connections are refused), the short answer finishes
within server.drain_seconds, the long one ends with an error frame and `data: [DONE]` when the
drain time is up, and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fake_upstreams import FakeModel, FakeOpenAI
from tests.integration.conftest import ServerThread
from tests.integration.test_cli_serve import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
DRAIN_SECONDS = 3
TOKEN_DELAY = 0.25  # short: 4 tokens (~1 s, within the drain); long: 80 tokens (~20 s)


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    fake = FakeOpenAI(
        [
            FakeModel("short", tokens=["a"] * 4, token_delay=TOKEN_DELAY),
            FakeModel("long", tokens=["b"] * 80, token_delay=TOKEN_DELAY),
        ]
    )
    thread = ServerThread(fake)  # type: ignore[arg-type]
    thread.start()
    yield thread.port
    thread.stop()


@dataclass
class Stream:
    """A streaming chat request read in a thread: its text, and when its first bytes came."""

    url: str
    model: str
    text: str = ""
    error: Exception | None = None
    started: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Stream:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        url = f"{self.url}/v1/chat/completions"
        try:
            with httpx.stream("POST", url, json=body, timeout=60) as reply:
                for chunk in reply.iter_text():
                    self.text += chunk
                    self.started.set()
        except Exception as exc:
            self.error = exc
        finally:
            self.started.set()

    def frames(self) -> list[str]:
        return [f.removeprefix("data: ") for f in self.text.split("\n\n") if f.strip()]


def serve(config: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


def refuses_connections(url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=0.5)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_drains_streams_then_exits_0(tmp_path, upstream):
    config = tmp_path / "config.yaml"
    base_url = f"http://127.0.0.1:{upstream}/v1"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"drain_seconds": DRAIN_SECONDS},
                "models": [
                    {"name": name, "backend": "openai", "base_url": base_url}
                    for name in ("short", "long")
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(config, port)
    try:
        wait_ready(url, proc)
        long, short = Stream(url, "long").start(), Stream(url, "short").start()
        assert long.started.wait(10) and short.started.wait(10)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert refuses_connections(url, within=2), "new connections were still accepted"
        for stream in (short, long):
            assert stream.thread is not None
            stream.thread.join(DRAIN_SECONDS + 15)
        ended = time.monotonic() - signalled
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert short.error is None and long.error is None, (short.error, long.error)
    # the short answer finished in the drain time: its whole stream, no error
    assert short.frames()[-1] == "[DONE]"
    assert "error" not in short.text
    # the long one was cut off at the deadline: an error frame, then [DONE]
    frames = long.frames()
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[-2])["error"]["code"] == "server_shutting_down"
    assert sum('"content":"b"' in f for f in frames) < 80
    assert DRAIN_SECONDS - 0.5 <= ended < DRAIN_SECONDS + 5


def test_a_second_ctrl_c_ends_the_streams_now_then_exits_0_without_a_traceback(tmp_path, upstream):
    """Ctrl-C starts the drain; Ctrl-C again stops waiting: the stream still running ends at
    once (error frame, [DONE]), the models unload and the process exits 0, no traceback."""
    config = tmp_path / "config.yaml"
    base_url = f"http://127.0.0.1:{upstream}/v1"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"drain_seconds": 60},
                "models": [{"name": "long", "backend": "openai", "base_url": base_url}],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(config, port)
    try:
        wait_ready(url, proc)
        long = Stream(url, "long").start()
        assert long.started.wait(10)
        proc.send_signal(signal.SIGINT)
        assert refuses_connections(url, within=2), "new connections were still accepted"
        asked_again = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert long.thread is not None
        long.thread.join(15)
        ended = time.monotonic() - asked_again
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert "asked again to stop: ending 1 request(s)" in output
    assert "Application shutdown complete" in output  # the lifespan ran: models unloaded
    frames = long.frames()
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[-2])["error"]["code"] == "server_shutting_down"
    assert ended < 5  # not the 60 s drain
