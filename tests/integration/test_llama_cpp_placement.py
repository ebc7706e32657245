"""Where a GGUF's layers run is said, not guessed: a GPU request on a CPU-only build warns at
startup (naming the model and how to get a GPU build), and /v1/models shows each in-process
model's device, offloaded layers and sequences per batch."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import SMOLLM2_SOURCE, ServerThread

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


@pytest.mark.gpu
def test_gpu_layers_on_a_cuda_build_run_there_and_answer(caplog):
    """With a build that offloads (CUDA and a GPU): every layer of ``n_gpu_layers: -1`` is on
    the GPU, nothing is warned, and the model answers on both (a 135M model's answer to this
    prompt depends on the CPU's arithmetic: only the GPU's is checked for "Paris")."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        pytest.skip("needs a llama-cpp-python build that offloads to a GPU (GGML_CUDA=on)")
    models = [
        LlamaCppSettings(name=name, backend="llama_cpp", source=SMOLLM2_SOURCE, n_gpu_layers=ngl)
        for name, ngl in (("smol-gpu", -1), ("smol-cpu", 0))
    ]
    caplog.set_level(logging.WARNING, logger="backends.llama_cpp.engine")
    thread = ServerThread(create_app(GatewayConfig(models=models)))
    thread.start()
    try:
        base = f"http://127.0.0.1:{thread.port}"
        cards = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
        answers = {
            name: httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": name, "temperature": 0, "max_tokens": 16,
                      "messages": [{"role": "user", "content": "What is the capital of France?"}]},
                timeout=60,
            ).json()["choices"][0]["message"]["content"]
            for name in ("smol-gpu", "smol-cpu")
        }  # fmt: skip
    finally:
        thread.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    placement = {card["id"]: card["placement"] for card in cards}
    gpu, cpu = placement["smol-gpu"], placement["smol-cpu"]
    assert gpu["device"] == "gpu" and gpu["gpu_layers"] == gpu["layers"] == 31
    assert gpu["gpu_bytes"] == gpu["weights_bytes"] > 0
    assert cpu["device"] == "cpu" and cpu["gpu_layers"] == 0 and cpu["gpu_bytes"] == 0
    assert "Paris" in answers["smol-gpu"] and answers["smol-cpu"].strip(), answers


def test_models_load_one_at_a_time(tiny_gguf: Path, monkeypatch):
    """llama.cpp's loading is not thread-safe (two models loading at once crashed a CUDA
    build): models that load on their first request, asked for together, take turns."""
    from llama_cpp import _internals

    real = _internals.LlamaModel.__init__
    guard = threading.Lock()
    active, peak = [0], [0]

    def tracked(self, *args, **kwargs) -> None:
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.1)
            real(self, *args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(_internals.LlamaModel, "__init__", tracked)
    models = [
        LlamaCppSettings(name=f"tiny-{i}", backend="llama_cpp", source=str(tiny_gguf),
                         parallel=1, preload=False)
        for i in range(3)
    ]  # fmt: skip
    thread = ServerThread(create_app(GatewayConfig(models=models)))
    thread.start()

    def ask(model: str) -> int:
        body = {"model": model, "prompt": "hi", "max_tokens": 1}
        url = f"http://127.0.0.1:{thread.port}/v1/completions"
        return httpx.post(url, json=body, timeout=60).status_code

    try:
        with ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(ask, [m.name for m in models]))
    finally:
        thread.stop()
    assert codes == [200, 200, 200]
    assert peak[0] == 1
