"""Where a GGUF's layers run is said, not guessed: a GPU request on a CPU-only build warns at
startup (naming the model and how to get a GPU build), and /v1/models shows each in-process
model's device, offloaded layers and sequences per batch."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration


def test_gpu_layers_on_a_cpu_build_warn_and_show_in_models(tiny_gguf: Path, caplog):
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload: there is nothing to warn about")
    models = [
        LlamaCppSettings(
            name="tiny-ngl", backend="llama_cpp", source=str(tiny_gguf), n_gpu_layers=-1
        ),
        LlamaCppSettings(name="tiny-cpu", backend="llama_cpp", source=str(tiny_gguf), parallel=2),
    ]
    caplog.set_level(logging.WARNING, logger="backends.llama_cpp.engine")
    thread = ServerThread(create_app(GatewayConfig(models=models)))
    thread.start()
    try:
        cards = httpx.get(f"http://127.0.0.1:{thread.port}/v1/models", timeout=30).json()["data"]
    finally:
        thread.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "'tiny-ngl'" in warnings[0] and "n_gpu_layers=-1" in warnings[0]
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install' in warnings[0]
    placement = {card["id"]: card["placement"] for card in cards}
    assert placement["tiny-ngl"]["device"] == "cpu"
    assert placement["tiny-ngl"]["gpu_layers"] == 0
    assert placement["tiny-ngl"]["layers"] >= 2  # blocks plus the output layer
    assert placement["tiny-cpu"]["parallel"] == 2
    assert placement["tiny-ngl"]["weights_bytes"] > 0 and placement["tiny-ngl"]["gpu_bytes"] == 0
