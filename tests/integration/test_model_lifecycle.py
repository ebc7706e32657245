"""Model lifecycle with real llama.cpp engines over HTTP: the admin routes load and unload the
tiny GGUF, /v1/models shows each model's state, max_loaded_models: 1 makes a request for the
other model unload the idle one first, and a file that is no model is a 503 with the reason
while the others keep serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def base_url(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broken = tmp_path_factory.mktemp("broken") / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")

    def lazy(name: str, source: str) -> LlamaCppSettings:
        return LlamaCppSettings(
            name=name, backend="llama_cpp", source=source, n_threads=1, preload=False
        )

    config = GatewayConfig(
        server=ServerSettings(max_loaded_models=1),
        models=[
            lazy("tiny-a", str(tiny_gguf)),
            lazy("tiny-b", str(tiny_gguf)),
            lazy("broken", str(broken)),
        ],
    )
    thread = ServerThread(create_app(config))
    thread.start()
    yield f"http://127.0.0.1:{thread.port}"
    thread.stop()


def states(url: str) -> dict[str, tuple[str, bool]]:
    cards = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return {card["id"]: (card["state"], card["loaded"]) for card in cards}


def chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": CHAT, "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_admin_load_unload_and_eviction_with_real_engines(base_url):
    assert states(base_url)["tiny-a"] == ("unloaded", False)
    loaded = httpx.post(f"{base_url}/admin/models/tiny-a/load", timeout=120)
    assert loaded.json() == {"model": "tiny-a", "state": "loaded"}
    assert states(base_url)["tiny-a"] == ("loaded", True)
    # one model at a time: a request for tiny-b unloads the idle tiny-a first
    assert chat(base_url, "tiny-b").status_code == 200
    now = states(base_url)
    assert (now["tiny-a"], now["tiny-b"]) == (("unloaded", False), ("loaded", True))
    unloaded = httpx.post(f"{base_url}/admin/models/tiny-b/unload", timeout=60)
    assert unloaded.json() == {"model": "tiny-b", "state": "unloaded"}
    assert states(base_url)["tiny-b"] == ("unloaded", False)
    listed = httpx.get(f"{base_url}/admin/models", timeout=10).json()["models"]
    assert {m["model"]: m["state"] for m in listed} == {
        "tiny-a": "unloaded",
        "tiny-b": "unloaded",
        "broken": "unloaded",
    }


def test_a_model_that_fails_to_load_is_503_with_the_reason_and_others_serve(base_url):
    failed = chat(base_url, "broken")
    assert failed.status_code == 503
    error = failed.json()["error"]
    assert error["code"] == "backend_unavailable"
    assert "broken" in error["message"]
    cards = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    card = next(c for c in cards if c["id"] == "broken")
    assert card["state"] == "error" and card["load_error"] == error["message"]
    assert chat(base_url, "tiny-a").status_code == 200
    assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200


def test_a_preloaded_model_that_fails_to_load_does_not_stop_the_others(
    tiny_gguf: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Startup goes on: the broken model is logged in one line, `/health` is 503 naming it,
    the good model serves, and the broken one's requests are a 503 with the reason."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    config = GatewayConfig(
        models=[
            LlamaCppSettings(name="broken", backend="llama_cpp", source=str(broken)),
            LlamaCppSettings(name="good", backend="llama_cpp", source=str(tiny_gguf), n_threads=1),
        ],
    )
    thread = ServerThread(create_app(config))
    with caplog.at_level("ERROR", logger="gateway.routing"):
        thread.start()
    try:
        url = f"http://127.0.0.1:{thread.port}"
        assert any("model broken failed to load" in r.getMessage() for r in caplog.records)
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["models"]["broken"]["status"] == "error"
        assert chat(url, "good").status_code == 200
        failed = chat(url, "broken")
        assert failed.status_code == 503 and "broken" in failed.json()["error"]["message"]
    finally:
        thread.stop()
