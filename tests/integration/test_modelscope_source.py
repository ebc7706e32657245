"""ModelScope sources (``modelscope:<org>/<repo>[/<file>]``) through the modelscope package,
with a cache pre-filled in ModelScope's own layout (``$MODELSCOPE_CACHE/models/<org>--<repo>/
snapshots/master/``): served with no network, and a missing one fails clearly (503) from an
endpoint that refuses connections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

PROBE = """
import sys
from backends.weight_sources import resolve_source
from backends.errors import BackendUnavailableError
try:
    print(resolve_source("mymodel", sys.argv[1]))
except BackendUnavailableError as exc:
    print("ERROR", exc.status, exc.message)
"""


def offline_env(cache: Path) -> dict[str, str]:
    return {
        "MODELSCOPE_CACHE": str(cache),
        # a hub that refuses every connection: a download attempt fails at once
        "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9",
    }


def prefill(cache: Path, repo: str, file: str, data: bytes) -> Path:
    snapshot = cache / "models" / repo.replace("/", "--") / "snapshots" / "master"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / file).write_bytes(data)
    return snapshot / file


def run_probe(source: str, cache: Path) -> str:
    env = {**os.environ, **offline_env(cache), "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, source], env=env, capture_output=True, text=True, timeout=120
    )
    return done.stdout.strip()


def test_a_modelscope_file_is_served_from_a_prefilled_cache(tmp_path, tiny_gguf):
    expected = prefill(tmp_path, "acme/tiny", "tiny.gguf", tiny_gguf.read_bytes())
    assert run_probe("modelscope:acme/tiny/tiny.gguf", tmp_path) == str(expected)
    assert run_probe("modelscope:acme/tiny", tmp_path) == str(expected.parent)


def test_a_modelscope_source_offline_fails_clearly_naming_the_model(tmp_path):
    out = run_probe("modelscope:acme/missing/model.gguf", tmp_path)
    assert out.startswith(
        "ERROR 503 model 'mymodel': could not fetch modelscope:acme/missing/model.gguf"
    ), out
    assert "MODELSCOPE_CACHE" in out and "local path" in out


def test_a_llama_cpp_model_from_modelscope_answers_on_a_real_server(
    tmp_path, tiny_gguf, monkeypatch
):
    prefill(tmp_path, "acme/tiny", "tiny.gguf", tiny_gguf.read_bytes())
    for name, value in offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    config = GatewayConfig(
        models=[
            LlamaCppSettings(
                name="tiny-ms", backend="llama_cpp", source="modelscope:acme/tiny/tiny.gguf"
            )
        ]
    )
    thread = ServerThread(create_app(config))
    thread.start()
    try:
        base = f"http://127.0.0.1:{thread.port}"
        answer = httpx.post(
            f"{base}/v1/chat/completions",
            json={
                "model": "tiny-ms",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            },
            timeout=60,
        )
        card = httpx.get(f"{base}/v1/models/tiny-ms", timeout=10).json()
    finally:
        thread.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] >= 1
    assert card["loaded"] is True and card["download"] is None  # done: no download under way
