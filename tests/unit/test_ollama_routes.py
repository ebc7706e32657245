"""The Ollama routes through the real app over ASGI with fake backends: listings, errors in
Ollama's shape and statuses, auth, the load request, embeddings, a mid-stream error line, and
a disconnect stopping generation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from backends.errors import BackendUnavailableError, QueueFullError
from backends.llama_cpp.settings import LlamaCppSettings
from backends.model_types import ModelCapabilities, ModelPlacement
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.ollama_models import human_number
from tests.fakes import FakeBackend, FakeEmbedder, FakeRelay, FakeScript
from tests.unit.disconnect import call_then_disconnect

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "why is the sky blue?"}]


class FakeCapable(FakeBackend):
    """A FakeBackend that says what its model can do (``HasCapabilities``)."""

    reasoning = True
    tools: str | None = "native"

    async def capabilities(self) -> ModelCapabilities:
        return ModelCapabilities(
            tools=self.tools, json_schema=True, reasoning=self.reasoning, context_length=2048
        )

    def placement(self) -> ModelPlacement | None:
        """Loaded with a quarter of its weights on a GPU (``HasPlacement``)."""
        if not self.loaded:
            return None
        return ModelPlacement(device="gpu+cpu", parallel=4, weights_bytes=4000, gpu_bytes=1000)


class FakeNoThinking(FakeCapable):
    reasoning = False


class FakeOpenAIRelayed(FakeNoThinking):
    tools = "passthrough"  # an OpenAI-compatible upstream: its /models does not tell


def entry(name: str, task: str = "generate", **extra: object) -> LlamaCppSettings:
    return LlamaCppSettings(
        name=name, backend="llama_cpp", source="unused.gguf", task=task, **extra
    )


@asynccontextmanager
async def served(
    backends: dict[str, FakeBackend],
    models: list[LlamaCppSettings] | None = None,
    api_keys: list | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    def factory(settings, _base_dir: Path | None) -> FakeBackend:
        return backends[settings.name]

    models = models or [entry(name) for name in backends]
    config = GatewayConfig(server=ServerSettings(api_keys=api_keys or []), models=models)
    app = create_app(config, backend_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def ndjson(reply: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in reply.text.splitlines() if line]


async def test_chat_streams_ndjson_by_default_and_name_latest_resolves():
    async with served({"alpha": FakeBackend("alpha")}) as client:
        reply = await client.post("/api/chat", json={"model": "alpha:latest", "messages": USER})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(reply)
    assert "".join(line["message"]["content"] for line in lines) == "Hello, world!"
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    assert {line["model"] for line in lines} == {"alpha:latest"}  # echoed as sent
    assert lines[-1]["eval_count"] == 4 and lines[-1]["prompt_eval_count"] == 7


async def test_null_fields_are_absent_as_in_go():
    # Go's encoding/json leaves a field at its default for null: stream on, content empty
    async with served({"alpha": FakeBackend("alpha")}) as client:
        chat = await client.post(
            "/api/chat",
            json={
                "model": "alpha",
                "messages": [*USER, {"role": "user", "content": None}],
                "stream": None,
                "options": {"temperature": None},
                "format": None,
            },
        )
        generate = await client.post(
            "/api/generate", json={"model": "alpha", "prompt": "hi", "raw": None, "stream": False}
        )
    assert chat.status_code == 200 and len(ndjson(chat)) == 5  # streamed
    assert generate.status_code == 200 and generate.json()["response"] == "Hello, world!"


async def test_a_body_without_a_json_content_type_is_read_as_json():
    # Ollama's own examples: curl -d '{...}' sends application/x-www-form-urlencoded
    body = json.dumps({"model": "alpha", "prompt": "hi", "stream": False})
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with served({"alpha": FakeBackend("alpha")}) as client:
        reply = await client.post("/api/generate", content=body, headers=headers)
    assert reply.status_code == 200 and reply.json()["response"] == "Hello, world!"


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/api/chat", {"model": "nope", "messages": USER}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "not found"),
        ("/api/show", {"model": "nope"}, 404, "not found"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, "not found"),
        ("/api/chat", {"messages": USER}, 400, "model"),
        ("/api/chat", {"model": "alpha", "messages": [{"role": "robot"}]}, 400, "role"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "template": "{{.P}}"}, 400, "Go"),
        ("/api/chat", {"model": "alpha", "messages": USER, "format": "xml"}, 400, "format"),
        ("/api/embed", {"model": "alpha", "input": "x"}, 400, "text-generation model"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/pull", {"model": "llama3"}, 400, "config.yaml"),
        ("/api/create", {"model": "x"}, 400, "config.yaml"),
    ],
)
async def test_errors_are_ollamas_shape_with_its_statuses(path, body, status, fragment):
    async with served({"alpha": FakeBackend("alpha")}) as client:
        reply = await client.post(path, content=json.dumps(body))
    assert reply.status_code == status, reply.text
    assert set(reply.json()) == {"error"} and fragment in reply.json()["error"]


async def test_model_management_routes_are_a_clear_error_not_a_framework_404():
    async with served({"alpha": FakeBackend("alpha")}) as client:
        delete = await client.request("DELETE", "/api/delete", json={"model": "alpha"})
        blob = await client.head("/api/blobs/sha256:abc")
    assert delete.status_code == 400 and "config.yaml" in delete.json()["error"]
    assert blob.status_code == 400


async def test_an_error_before_the_first_line_keeps_its_status():
    fake = FakeBackend(
        "alpha", FakeScript(fail_before_first=QueueFullError("queue full", retry_after=2))
    )
    async with served({"alpha": fake}) as client:
        reply = await client.post("/api/chat", json={"model": "alpha", "messages": USER})
    assert reply.status_code == 429 and reply.json() == {"error": "queue full"}
    assert reply.headers["retry-after"] == "2"


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
async def test_a_failure_mid_stream_is_an_error_line_then_the_end(path):
    script = FakeScript(fail_after_tokens=2, fail_with=BackendUnavailableError("engine died"))
    body = {"model": "alpha", "messages": USER, "prompt": "x"}
    async with served({"alpha": FakeBackend("alpha", script)}) as client:
        reply = await client.post(path, json=body)
    assert reply.status_code == 200
    lines = ndjson(reply)
    assert lines[-1] == {"error": "engine died"}
    assert [line["done"] for line in lines[:-1]] == [False, False]


async def test_the_load_request_loads_the_model_and_answers_load():
    fake = FakeBackend("lazy")
    async with served({"lazy": fake}, [entry("lazy", preload=False)]) as client:
        assert not fake.loaded
        chat = await client.post("/api/chat", json={"model": "lazy", "messages": []})
        generate = await client.post("/api/generate", json={"model": "lazy"})
    assert fake.loaded and not fake.requests
    assert chat.json()["done_reason"] == "load" and chat.json()["done"] is True
    assert chat.json()["message"] == {"role": "assistant", "content": ""}
    assert generate.json()["done_reason"] == "load" and generate.json()["response"] == ""


async def test_load_duration_is_measured_when_the_request_loads_the_model():
    async with served({"lazy": FakeBackend("lazy")}, [entry("lazy", preload=False)]) as client:
        first = await client.post(
            "/api/generate", json={"model": "lazy", "prompt": "x", "stream": False}
        )
        second = await client.post(
            "/api/generate", json={"model": "lazy", "prompt": "x", "stream": False}
        )
    assert first.json()["load_duration"] > 0
    assert second.json()["load_duration"] == 0


@pytest.mark.parametrize("think", [True, "high"])
async def test_think_on_a_model_that_cannot_is_ollamas_400(think):
    models = {
        "plain": FakeNoThinking("plain"),
        "thinker": FakeCapable("thinker"),
        "relayed": FakeOpenAIRelayed("relayed"),
    }
    async with served(models) as client:
        replies = {
            name: await client.post(
                "/api/chat",
                json={"model": name, "messages": USER, "think": think, "stream": False},
            )
            for name in models
        }
        off = await client.post(
            "/api/chat", json={"model": "plain", "messages": USER, "think": False, "stream": False}
        )
    assert replies["plain"].status_code == 400
    assert replies["plain"].json() == {"error": '"plain" does not support thinking'}
    assert replies["thinker"].status_code == 200 and replies["relayed"].status_code == 200
    assert off.status_code == 200


async def test_num_ctx_above_the_window_is_a_400_and_below_is_served():
    async with served({"cap": FakeCapable("cap")}) as client:
        over = await client.post(
            "/api/chat", json={"model": "cap", "messages": USER, "options": {"num_ctx": 8192}}
        )
        under = await client.post(
            "/api/chat",
            json={"model": "cap", "messages": USER, "options": {"num_ctx": 512}, "stream": False},
        )
    assert over.status_code == 400 and "2048" in over.json()["error"]
    assert under.status_code == 200


async def test_tags_show_and_ps():
    fakes = {"cap": FakeCapable("cap"), "lazy": FakeBackend("lazy"), "vec": FakeEmbedder("vec")}
    models = [entry("cap", aliases=["c"]), entry("lazy", preload=False), entry("vec", "embed")]
    async with served(fakes, models) as client:
        tags = (await client.get("/api/tags")).json()
        ps = (await client.get("/api/ps")).json()
        show = (await client.post("/api/show", json={"model": "c:latest"})).json()
        show_vec = (await client.post("/api/show", json={"name": "vec"})).json()
        version = (await client.get("/api/version")).json()
    assert [m["name"] for m in tags["models"]] == ["cap", "lazy", "vec"]
    first = tags["models"][0]
    assert set(first) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert len(first["digest"]) == 64 and first["details"]["format"] == "gguf"
    assert set(first["details"]) == {
        "parent_model",
        "format",
        "family",
        "families",
        "parameter_size",
        "quantization_level",
    }
    assert [m["name"] for m in ps["models"]] == ["cap", "vec"]  # lazy is not loaded
    cap, vec = ps["models"]
    assert (cap["size"], cap["size_vram"]) == (4000, 1000)  # ollama ps: 75%/25% CPU/GPU
    assert (vec["size"], vec["size_vram"]) == (0, 0)  # it does not say: not sized
    assert first["size"] == 4000  # /api/tags sizes a loaded model too
    assert ps["models"][0]["context_length"] == 2048
    assert ps["models"][0]["expires_at"] > "2300"
    assert show["capabilities"] == ["completion", "tools", "thinking"]
    assert show["model_info"]["general.architecture"] == "llama_cpp"
    assert show["model_info"]["llama_cpp.context_length"] == 2048
    assert show_vec["capabilities"] == ["embedding"]
    assert version["version"].startswith("0.")


@pytest.mark.parametrize(
    ("count", "size"),
    [(134_515_008, "134.52M"), (8_030_261_248, "8.0B"), (7_000_000_000, "7B"), (22_700, "23K")],
)
def test_parameter_sizes_are_written_as_ollama_writes_them(count, size):
    assert human_number(count) == size


async def test_embed_and_the_older_embeddings_route():
    async with served({"vec": FakeEmbedder("vec")}, [entry("vec", "embed")]) as client:
        embed = await client.post("/api/embed", json={"model": "vec", "input": ["a b", "c"]})
        one = await client.post("/api/embed", json={"model": "vec", "input": "a b c"})
        old = await client.post("/api/embeddings", json={"model": "vec", "prompt": "a b"})
        load = await client.post("/api/embed", json={"model": "vec", "input": []})
        chat = await client.post("/api/chat", json={"model": "vec", "messages": USER})
    body = embed.json()
    assert list(body) == [
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    ]
    assert [v[1:] for v in body["embeddings"]] == [[0, 2], [1, 1]]
    assert body["prompt_eval_count"] == 3 and body["total_duration"] > 0
    assert one.json()["embeddings"][0][2] == 3
    assert old.json()["embedding"][1:] == [0, 2] and set(old.json()) == {"embedding"}
    assert load.json()["embeddings"] == []
    assert chat.status_code == 400 and "embedding model" in chat.json()["error"]


async def test_embed_over_an_openai_relay_reads_its_answer():
    reply = json.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "model": "up",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }
    ).encode()
    fake = FakeRelay("up", reply)
    async with served({"up": fake}, [entry("up", "embed")]) as client:
        answer = await client.post("/api/embed", json={"model": "up", "input": "hi there"})
    assert answer.json()["embeddings"] == [[0.5, 0.25]]
    assert answer.json()["prompt_eval_count"] == 2
    assert fake.relayed[0][0] == "/embeddings" and fake.relayed[0][1]["input"] == ["hi there"]


async def test_api_keys_guard_the_routes_but_version():
    keys = ["sekret"]
    async with served({"alpha": FakeBackend("alpha")}, api_keys=keys) as client:
        version = await client.get("/api/version")
        refused = await client.get("/api/tags")
        tags = await client.get("/api/tags", headers={"Authorization": "Bearer sekret"})
    assert version.status_code == 200
    assert refused.status_code == 401 and set(refused.json()) == {"error"}
    assert tags.status_code == 200


@pytest.mark.parametrize("stream", [True, False])
async def test_a_disconnect_stops_generation(stream):
    body = {"model": "alpha", "messages": USER, "stream": stream}
    fake, at_return, _ = await call_then_disconnect(body, 0.1, path="/api/chat")
    assert 0 < at_return < 100
    assert fake.tokens_generated == at_return and fake.streams_closed == 1
