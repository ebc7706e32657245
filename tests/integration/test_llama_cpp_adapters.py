"""GGUF LoRA adapters on a llama.cpp model, each served as its own public model: a real server,
real llama.cpp, the tiny GGUF with two tiny LoRA GGUFs written offline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.errors import BackendUnavailableError
from backends.llama_cpp.backend import LlamaCppBackend
from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import NO_EOS, RunningServer, ServerThread
from tests.tiny_gguf import write_tiny_lora_gguf

pytestmark = pytest.mark.integration

PROMPT = "tell me a story about the gateway"


def tiny_entry(name: str, source: Path, adapters: list[dict[str, object]]) -> LlamaCppSettings:
    return LlamaCppSettings.model_validate(
        {
            "name": name,
            "backend": "llama_cpp",
            "source": str(source),
            "n_threads": 1,
            "adapters": adapters,
        }
    )


@pytest.fixture(scope="module")
def tiny_gguf_loras(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("gguf-lora")
    return [write_tiny_lora_gguf(tiny_gguf, root / f"lora-{s}.gguf", seed=s) for s in (1, 2)]


@pytest.fixture(scope="module")
def lora_server(tiny_gguf: Path, tiny_gguf_loras: list[Path]) -> Iterator[RunningServer]:
    adapters: list[dict[str, object]] = [
        {"name": "tiny-lora-a", "source": str(tiny_gguf_loras[0])},
        {"name": "tiny-lora-b", "source": str(tiny_gguf_loras[1]), "scale": 0.5},
    ]
    app = create_app(GatewayConfig(models=[tiny_entry("tiny-base", tiny_gguf, adapters)]))
    thread = ServerThread(app)
    thread.start()
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


def answer(server: RunningServer, model: str, content: str = PROMPT) -> str:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 12,
        "logit_bias": NO_EOS,
    }
    reply = httpx.post(f"{server.v1}/chat/completions", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == model
    return str(body["choices"][0]["message"]["content"])


def test_adapters_are_listed_with_their_base(lora_server):
    cards = {m["id"]: m for m in httpx.get(f"{lora_server.v1}/models").json()["data"]}
    for name in ("tiny-lora-a", "tiny-lora-b"):
        assert cards[name]["parent"] == "tiny-base"
        assert cards[name]["backend"] == "llama_cpp" and cards[name]["loaded"]
    assert "parent" not in cards["tiny-base"]


def test_each_adapter_answers_differently_from_the_base_and_each_other(lora_server):
    answers = [answer(lora_server, m) for m in ("tiny-base", "tiny-lora-a", "tiny-lora-b")]
    assert len(set(answers)) == 3, answers


def test_switching_adapters_never_reuses_a_prefix_computed_under_another(lora_server):
    """Each slot's cache is tagged with the adapter it was computed under (4 slots here): a
    prompt is reused only under the same adapter, from whichever slot holds it."""
    stats = lora_server.backend("tiny-base").stats
    order = ["tiny-base", "tiny-lora-a", "tiny-lora-a", "tiny-base", "tiny-lora-b", "tiny-base"]
    answers, prefilled = [], []
    for model in order:
        before = stats.prefill_tokens
        answers.append(answer(lora_server, model, "the same prompt each time"))
        prefilled.append(stats.prefill_tokens - before)
    base, lora_a, lora_a_again, base_again, lora_b, base_last = answers
    assert base == base_again == base_last  # adapters cleared for base requests
    assert lora_a == lora_a_again
    assert len({base, lora_a, lora_b}) == 3
    # first use of an adapter: the whole prompt; again under the same adapter: its last token
    full = prefilled[0]
    assert full > 1
    assert prefilled == [full, full, 1, 1, full, 1]


def test_concurrent_requests_for_base_and_adapters_each_get_their_own_answer(lora_server):
    models = ["tiny-base", "tiny-lora-a", "tiny-lora-b"]
    solo = [answer(lora_server, m, f"q{i}") for i, m in enumerate(models * 2)]

    async def together() -> list[str]:
        async with httpx.AsyncClient(base_url=lora_server.v1, timeout=60) as client:
            payloads = [
                {
                    "model": m,
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    "temperature": 0,
                    "max_tokens": 12,
                    "logit_bias": NO_EOS,
                }
                for i, m in enumerate(models * 2)
            ]
            replies = await asyncio.gather(
                *(client.post("/chat/completions", json=p) for p in payloads)
            )
        return [r.json()["choices"][0]["message"]["content"] for r in replies]

    assert asyncio.run(together()) == solo


@pytest.mark.anyio
async def test_a_file_that_is_not_a_lora_of_the_model_fails_the_load_naming_it(tiny_gguf):
    entry = tiny_entry("tiny-bad", tiny_gguf, [{"name": "not-a-lora", "source": str(tiny_gguf)}])
    backend = LlamaCppBackend(entry)
    with pytest.raises(BackendUnavailableError, match="adapter 'not-a-lora'"):
        await backend.load()
    health = await backend.health()
    assert health.status == "error" and "not-a-lora" in (health.detail or "")
    await backend.aclose()
