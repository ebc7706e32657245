"""The transformers engine's models: LoRA adapters as their own public models over one base,
the real SmolLM2 through the openai SDK and LangChain, GGUF conversion caching, hub sources
from a pre-filled cache, and models that cannot load."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from langchain_openai import ChatOpenAI
from openai import OpenAI

from backends.errors import BackendUnavailableError
from backends.openai_types import ChatCompletion, ChatCompletionRequest
from backends.transformers.backend import TransformersBackend
from gateway.openai_chat import collect_completion
from gateway.openai_chat_request import to_generation_request
from tests.integration.conftest import hf_entry
from tests.integration.test_transformers_engine import body, complete, complete_many, text
from tests.tiny_gguf import write_tiny_gguf
from tests.tiny_hf import write_tiny_hf_model

pytestmark = pytest.mark.integration

CAPITAL = [{"role": "user", "content": "Name the capital city of France in one word."}]


def test_adapters_are_listed_with_their_base(hf_server):
    models = httpx.get(f"{hf_server.v1}/models").json()["data"]
    cards = {m["id"]: m for m in models}
    assert cards["tiny-hf-a"]["parent"] == "tiny-hf" == cards["tiny-hf-b"]["parent"]
    assert cards["tiny-hf-a"]["backend"] == "transformers" and cards["tiny-hf-a"]["loaded"]
    assert "parent" not in cards["tiny-hf"]


def test_each_adapter_answers_differently_from_the_base(hf_server):
    answers = {m: text(complete(hf_server, body(m))) for m in ("tiny-hf", "tiny-hf-a", "tiny-hf-b")}
    assert len(set(answers.values())) == 3
    reply = complete(hf_server, body("tiny-hf-a"))
    assert reply["model"] == "tiny-hf-a"


def test_requests_for_different_adapters_share_a_batch(hf_server):
    models = ["tiny-hf", "tiny-hf-a", "tiny-hf-b"] * 2
    solo = [text(complete(hf_server, body(m, content=f"q{i}"))) for i, m in enumerate(models)]
    stats = hf_server.backend("tiny-hf").stats
    steps, tokens = stats.decode_steps, stats.tokens_generated
    payloads = [body(m, content=f"q{i}") for i, m in enumerate(models)]
    batched = asyncio.run(complete_many(hf_server, payloads))
    assert [text(r) for r in batched] == solo
    assert stats.decode_steps - steps < (stats.tokens_generated - tokens) / 2


def test_smollm2_answers_paris_through_the_openai_sdk(hf_server):
    client = OpenAI(base_url=hf_server.v1, api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-hf", messages=CAPITAL, temperature=0, max_tokens=16
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="smollm2-hf", messages=CAPITAL, temperature=0, max_tokens=16, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == reply.choices[0].message.content


def test_a_three_turn_chat_keeps_its_history(hf_server):
    client = OpenAI(base_url=hf_server.v1, api_key="unused")
    messages = list(CAPITAL)
    prompts, answers = [], []
    for follow_up in ["And of Italy?", "Thanks. Say goodbye.", None]:
        reply = client.chat.completions.create(
            model="smollm2-hf", messages=messages, temperature=0, max_tokens=24
        )
        prompts.append(reply.usage.prompt_tokens)
        answers.append(reply.usage.completion_tokens)
        if follow_up is not None:
            messages += [
                {"role": "assistant", "content": reply.choices[0].message.content},
                {"role": "user", "content": follow_up},
            ]
    assert len(prompts) == 3
    # each turn resends the whole history: the previous prompt and answer are in it
    for turn in (1, 2):
        assert prompts[turn] > prompts[turn - 1] + answers[turn - 1]


def test_langchain_invoke_and_stream(hf_server):
    llm = ChatOpenAI(
        base_url=hf_server.v1, api_key="unused", model="smollm2-hf", temperature=0, max_tokens=16
    )
    assert "Paris" in llm.invoke(CAPITAL[0]["content"]).content
    streamed = "".join(chunk.content for chunk in llm.stream(CAPITAL[0]["content"]))
    assert "Paris" in streamed
    batch = llm.batch([CAPITAL[0]["content"]] * 3)
    assert all("Paris" in m.content for m in batch)


def test_gguf_is_converted_once_then_reused(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    settings = hf_entry("tiny-gguf", str(gguf), tmp_path / "cache", dtype="float32")

    async def load_twice() -> list[bool]:
        converted = []
        for _ in range(2):
            backend = TransformersBackend(settings)
            await backend.load()
            assert backend.loaded_model is not None
            converted.append(backend.loaded_model.converted_from_gguf)
            reply = await chat(
                backend, _request("tiny-gguf", max_tokens=3, logit_bias={"2": -100, "0": -100})
            )
            assert reply.usage.completion_tokens == 3
            await backend.aclose()
        return converted

    assert asyncio.run(load_twice()) == [True, False]
    folders = list((tmp_path / "cache" / "gguf-converted").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()


HUB_PROBE = """
import asyncio, sys
from backends.errors import BackendUnavailableError
from backends.openai_types import ChatCompletionRequest
from backends.transformers.settings import TransformersSettings
from backends.openai_types import ChatCompletion, ChatCompletionRequest
from backends.transformers.backend import TransformersBackend
from gateway.openai_chat import collect_completion
from gateway.openai_chat_request import to_generation_request

async def main(source):
    backend = TransformersBackend(TransformersSettings(
        name="tiny-hub", backend="transformers", source=source, cache_dir=sys.argv[2]))
    try:
        await backend.load()
    except BackendUnavailableError as exc:
        print("ERROR", exc.status, exc.message)
        return
    request = ChatCompletionRequest(model="tiny-hub", messages=[{"role": "user", "content": "hi"}],
                                    max_tokens=2, logit_bias={"2": -100})
    events = await backend.generate(to_generation_request(request))
    print("OK", (await collect_completion(events, "tiny-hub")).usage.completion_tokens)
    await backend.aclose()

asyncio.run(main(sys.argv[1]))
"""


def run_hub_probe(source: str, hub: Path, cache: Path) -> str:
    # huggingface_hub reads its cache location and offline switch at import: a fresh process
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", HUB_PROBE, source, str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip()


def test_hf_source_loads_from_a_prefilled_hub_cache(tmp_path, tiny_hf):
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    snapshot = repo / "snapshots" / ("b" * 40)
    shutil.copytree(tiny_hf, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    assert run_hub_probe("hf:acme/tiny-chat", tmp_path / "hub", tmp_path / "c") == "OK 2"
    missing = run_hub_probe("hf:acme/not-there", tmp_path / "hub", tmp_path / "c")
    assert missing.startswith("ERROR 503 model 'tiny-hub': could not fetch hf:acme/not-there")
    assert "set this model's `source:` to the local path" in missing


def test_a_model_without_chat_template_needs_one_in_config(tmp_path):
    folder = write_tiny_hf_model(tmp_path / "bare", chat_template=False)
    bare = TransformersBackend(hf_entry("bare", str(folder), tmp_path / "c"))
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    fixed = TransformersBackend(
        hf_entry("fixed", str(folder), tmp_path / "c", chat_template=template)
    )

    async def run() -> None:
        with pytest.raises(BackendUnavailableError, match="no chat template; set `chat_template:`"):
            await bare.load()
        assert (await bare.health()).status == "error"
        await fixed.load()
        reply = await chat(fixed, _request("fixed", max_tokens=2, logit_bias={"2": -100}))
        assert reply.usage.completion_tokens == 2
        await fixed.aclose()

    asyncio.run(run())


def test_not_a_model_folder_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    backend = TransformersBackend(hf_entry("empty", str(tmp_path / "empty"), tmp_path / "c"))
    with pytest.raises(BackendUnavailableError, match="model 'empty' failed to load from"):
        asyncio.run(backend.load())


def test_lazy_model_loads_on_first_request_and_unloads(tmp_path, tiny_hf):
    backend = TransformersBackend(hf_entry("lazy", str(tiny_hf), tmp_path / "c", preload=False))

    async def run() -> None:
        assert not backend.loaded and (await backend.health()).status == "unloaded"
        reply = await chat(backend, _request("lazy", max_tokens=2, logit_bias={"2": -100}))
        assert reply.usage.completion_tokens == 2 and backend.loaded
        await backend.unload()
        assert not backend.loaded
        await backend.aclose()
        with pytest.raises(BackendUnavailableError):
            await chat(backend, _request("lazy", max_tokens=2))

    asyncio.run(run())


async def chat(backend: TransformersBackend, request: ChatCompletionRequest) -> ChatCompletion:
    """The backend used as a library, as the OpenAI chat surface uses it."""
    events = await backend.generate(to_generation_request(request))
    return await collect_completion(events, request.model)


def _request(model: str, **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **extra}
    )
