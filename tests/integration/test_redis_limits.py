"""Rate limits shared through a real ``redis-server`` (Debian's, installed by scripts/test.sh):
the Lua scripts against the same arithmetic as the in-process store (on a fake clock), two
``llmgate serve`` processes enforcing one budget, and Redis dying mid-run (each gateway follows
its policy, logs the outage once, never answers 500)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
import yaml

from gateway.api_keys import hash_key
from gateway.limit_store import Bucket, LimitStore, MemoryLimitStore, RedisLimitStore
from tests.fake_upstreams import FakeOpenAI
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
KEY = "sk-replica-test-93c1d7"
PROMPT = "okapi-tangerine-lighthouse-5518"
CHAT = {"model": "remote", "messages": [{"role": "user", "content": PROMPT}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: scripts/test.sh installs Debian's redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, "redis-server answers PING", 20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server: RedisServer) -> AsyncIterator[LimitStore]:
    made: LimitStore = (
        MemoryLimitStore() if request.param == "memory" else RedisLimitStore(redis_server.url)
    )
    yield made
    await made.aclose()


@pytest.mark.anyio
async def test_both_stores_count_alike_on_a_fake_clock(store: LimitStore):
    requests, tokens = Bucket("k:requests", 3), Bucket("k:tokens", 600, cost=0)
    now = 1_700_000_000.0
    admitted = [await store.admit([requests, tokens], now) for _ in range(4)]
    assert [s[0].remaining for s in admitted] == [2, 1, 0, 0]
    assert [s[0].retry_after for s in admitted] == [0, 0, 0, pytest.approx(20)]
    await store.charge(tokens, 900, now)
    [_, spent] = await store.admit([requests, tokens], now + 20)
    assert spent.remaining == 0 and spent.retry_after == pytest.approx(10.1)
    [again, fine] = await store.admit([requests, tokens], now + 30.1)
    assert (again.retry_after, fine.retry_after, again.remaining) == (0, 0, 0)


@pytest.mark.anyio
async def test_redis_reloads_its_scripts_after_a_flush(redis_server: RedisServer):
    store = RedisLimitStore(redis_server.url)
    try:
        bucket = Bucket("flush:requests", 2)
        await store.admit([bucket], 100.0)
        await store._redis.script_flush()
        [state] = await store.admit([bucket], 100.0)
        assert state.remaining == 0
        assert await store._redis.pttl("llmgate:rl:flush:requests") > 0  # keys expire
    finally:
        await store.aclose()


@pytest.fixture
def upstream() -> Iterator[str]:
    thread = ServerThread(FakeOpenAI(["fake-model"]))
    thread.start()
    yield f"http://127.0.0.1:{thread.port}/v1"
    thread.stop()


class Gateway:
    """``python -m gateway serve`` on a config of its own; output kept in a file."""

    def __init__(self, tmp: Path, name: str, upstream: str, redis_url: str, policy: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "server": {
                "api_keys": [{"key": hash_key(KEY), "name": "shared", "rpm": 4}],
                "redis_url": redis_url,
                "rate_limit_failure": policy,
            },
            "models": [
                {
                    "name": "remote",
                    "backend": "openai",
                    "base_url": upstream,
                    "upstream_model": "fake-model",
                    "health_check_interval": 0,
                }
            ],
        }
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("w") as out:
            self.process = self._spawn(path, env, out)

    def _spawn(self, path: Path, env: dict[str, str], out: IO[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(path),
                "--port",
                str(self.port),
                "--log-level",
                "debug",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def chat(self) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEY}"}
        return httpx.post(f"{self.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def gateways(tmp_path: Path, upstream: str, redis_server: RedisServer) -> Iterator[list[Gateway]]:
    running = [
        Gateway(tmp_path, name, upstream, redis_server.url, policy)
        for name, policy in (("open", "open"), ("closed", "closed"))
    ]
    try:
        for gateway in running:
            wait_for(gateway.ready, "the gateway is ready", 90)
        yield running
    finally:
        for gateway in running:
            gateway.stop()


def test_two_replicas_share_one_budget(gateways: list[Gateway]):
    replies = [gateways[i % 2].chat() for i in range(6)]
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == [
        "3",
        "2",
        "1",
        "0",
        "0",
        "0",
    ]
    assert 10 <= int(replies[4].headers["retry-after"]) <= 15  # a request each 15 s
    assert replies[5].json()["error"]["code"] == "rate_limit_exceeded"
    for gateway in gateways:
        logged = gateway.output()
        assert "DEBUG" in logged  # the check below reads debug output
        assert KEY not in logged and PROMPT not in logged


def test_redis_dying_mid_run_follows_each_policy_and_is_logged_once(
    gateways: list[Gateway], redis_server: RedisServer
):
    fail_open, fail_closed = gateways
    assert fail_open.chat().status_code == 200 and fail_closed.chat().status_code == 200
    redis_server.stop()
    opened = [fail_open.chat() for _ in range(5)]  # past rpm: nothing is counted now
    closed = [fail_closed.chat() for _ in range(3)]
    assert [r.status_code for r in opened] == [200] * 5
    assert "x-ratelimit-limit-requests" not in opened[0].headers
    assert [r.status_code for r in closed] == [503] * 3
    assert closed[0].json()["error"]["code"] == "rate_limit_unavailable"
    for gateway, policy in ((fail_open, "open"), (fail_closed, "closed")):
        assert gateway.output().count("limit store is unreachable") == 1
        assert f"failing {policy}" in gateway.output()
    redis_server.start()  # back, empty: limits hold again and the recovery is logged once
    back = [fail_closed.chat() for _ in range(5)]
    assert [r.status_code for r in back] == [200, 200, 200, 200, 429]
    assert fail_closed.output().count("answers again") == 1
    for gateway in gateways:
        assert "Traceback" not in gateway.output()
