"""Shared by the chat page and terminal chat tests: a gateway on a real port serving the
embedded SmolLM2 and the tiny GGUF through llama.cpp, plus models relayed to a fake
OpenAI-compatible upstream (a test double) that answer with scripted text."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backends.llama_cpp.settings import LlamaCppSettings
from backends.upstream.settings import OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.fake_upstreams import FakeModel, FakeOpenAI
from tests.integration.conftest import SMOLLM2_SOURCE, RunningServer, ServerThread

# What a hostile (or confused) model might write: it must show as text, never as markup.
HOSTILE = ["Look: ", "<img src=x onerror=alert(1)>", " and ", "<script>alert(2)</script>", " done"]
ARTIFACTS = Path(os.environ.get("LLMGATE_TEST_ARTIFACTS", "test-artifacts")).resolve()


@dataclass
class ChatGateway:
    server: RunningServer
    upstream: FakeOpenAI


def chat_gateway(tiny_gguf: Path, api_keys: list[str] | None = None) -> Iterator[ChatGateway]:
    upstream = FakeOpenAI(
        [
            FakeModel("hostile", tokens=HOSTILE),
            FakeModel("echo", tokens=["Noted", "."]),
            FakeModel("thinker", tokens=["4"], reasoning=["Two plus two ", "is four."]),
            FakeModel("escapes", tokens=["safe", "\x1b]52;c;cHduZWQ=\x07", "\x1b[2J", " text"]),
            FakeModel(
                "short", tokens=["Sure", "."], context_length=60
            ),  # words, as the fake counts
        ]
    )
    upstream_thread = ServerThread(upstream)  # type: ignore[arg-type]
    upstream_thread.start()
    base = f"http://127.0.0.1:{upstream_thread.port}/v1"

    def relayed(name: str) -> OpenAICompatSettings:
        return OpenAICompatSettings(
            name=name, backend="openai", base_url=base, upstream_model=name,
            health_check_interval=0,
        )  # fmt: skip

    config = GatewayConfig(
        server=ServerSettings(api_keys=api_keys or []),
        models=[
            LlamaCppSettings(
                name="smollm2", aliases=["default"], backend="llama_cpp",
                source=SMOLLM2_SOURCE, n_threads=1,
            ),
            LlamaCppSettings(name="tiny", backend="llama_cpp", source=str(tiny_gguf)),
            relayed("hostile"),
            relayed("echo"),
            relayed("thinker"),
            relayed("escapes"),
            relayed("short"),
            OpenAICompatSettings(
                name="vectors", backend="openai", base_url=base, upstream_model="echo",
                task="embed", health_check_interval=0,
            ),
        ],
    )  # fmt: skip
    app = create_app(config)
    thread = ServerThread(app)
    thread.start()
    try:
        server = RunningServer(
            app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port
        )
        yield ChatGateway(server, upstream)
    finally:
        thread.stop()
        upstream_thread.stop()


def chromium_path() -> str:
    """Debian's Chromium, which scripts/test.sh installs; a missing browser fails the test."""
    found = os.environ.get("LLMGATE_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium is not installed: apt-get install chromium (scripts/test.sh)")
    return found


# Chromium as root in a container, with no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
