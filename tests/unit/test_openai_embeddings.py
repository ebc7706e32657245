"""The OpenAI embeddings surface: what the translator makes of each ``input`` form, the
response's exact shape (floats and base64 carrying the same float32 values), the relay path,
and the 400s, through the real app over ASGI with fake backends."""

from __future__ import annotations

import base64
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from backends.embedding_types import CreateEmbeddingRequest
from backends.embeddings import EmbeddingResult
from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.openai_embeddings import encode_vector, to_embedding_request, to_response
from tests.fakes import FakeBackend, FakeEmbedder, FakeRelay

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("sent", "inputs"),
    [
        ("a cat", ("a cat",)),
        (["a", "b c"], ("a", "b c")),
        ([101, 7, 102], ((101, 7, 102),)),
        ([[101, 7], [5]], ((101, 7), (5,))),
    ],
)
def test_each_input_form_becomes_core_inputs(sent, inputs):
    body = CreateEmbeddingRequest(model="m", input=sent, dimensions=4, user="u")
    request = to_embedding_request(body)
    assert (request.inputs, request.dimensions, request.user) == (inputs, 4, "u")


def test_float_and_base64_carry_the_same_float32_values():
    vector = array("f", [0.1, -2.5, 1e-7, 3.4e38])
    floats = encode_vector(vector, "float")
    encoded = encode_vector(vector, "base64")
    assert isinstance(encoded, str)
    # what the openai SDK does with base64: little-endian float32
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == floats
    assert floats[0] != 0.1  # the float32 value, not a rounded decimal


def test_the_response_is_openais_shape_with_the_model_as_sent():
    body = CreateEmbeddingRequest(model="alias", input=["x", "y"])
    result = EmbeddingResult((array("f", [1.0]), array("f", [2.0])), prompt_tokens=9)
    assert to_response(result, body).model_dump() == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0]},
            {"object": "embedding", "index": 1, "embedding": [2.0]},
        ],
        "model": "alias",
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }


def entry(name: str, task: str = "embed", aliases: tuple[str, ...] = ()) -> LlamaCppSettings:
    return LlamaCppSettings(
        name=name, aliases=list(aliases), backend="llama_cpp", source="unused.gguf", task=task
    )


@asynccontextmanager
async def served(
    backends: dict[str, FakeBackend], models: list[LlamaCppSettings]
) -> AsyncIterator[httpx.AsyncClient]:
    def factory(settings, _base_dir: Path | None) -> FakeBackend:
        return backends[settings.name]

    app = create_app(GatewayConfig(models=models), backend_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_an_embedder_answers_through_the_route():
    fake = FakeEmbedder("vec")
    async with served({"vec": fake}, [entry("vec", aliases=("e",))]) as client:
        reply = await client.post(
            "/v1/embeddings",
            json={"model": "e", "input": ["a b", "c"], "encoding_format": "base64"},
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["object"], body["model"], body["usage"]) == (
        "list",
        "e",
        {"prompt_tokens": 3, "total_tokens": 3},
    )
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4")[1:] for d in body["data"]]
    assert [d.tolist() for d in decoded] == [[0, 2], [1, 1]]
    assert reply.headers["x-llmgate-model"] == "vec"


async def test_a_relay_gets_the_request_as_sent_vendor_extras_included():
    fake = FakeRelay("up", reply=b'{"object":"list","data":[],"model":"up"}')
    async with served({"up": fake}, [entry("up")]) as client:
        sent = {"model": "up", "input": "x", "truncate_prompt_tokens": 8}
        reply = await client.post("/v1/embeddings", json=sent)
    assert reply.status_code == 200
    assert reply.content == fake.reply
    assert fake.relayed == [("/embeddings", sent)]
    assert reply.headers["x-llmgate-replica"] == "http://upstream.test"


@pytest.mark.parametrize(
    ("field", "value", "param", "fragment"),
    [
        ("input", "", "input", "empty string"),
        ("input", [], "input", "empty list"),
        ("input", ["a", ""], "input", "item 1 is empty"),
        ("input", [[1], []], "input", "item 1 is empty"),
        ("input", ["x"] * 2049, "input", "at most 2048"),
        ("input", ["a", 1], "input", None),
        ("input", {"text": "a"}, "input", None),
        ("encoding_format", "int8", "encoding_format", None),
        ("dimensions", 0, "dimensions", None),
    ],
)
async def test_bad_fields_are_400s_in_the_openai_envelope(field, value, param, fragment):
    fake = FakeEmbedder("vec")
    async with served({"vec": fake}, [entry("vec")]) as client:
        body = {"model": "vec", "input": "ok", field: value}
        reply = await client.post("/v1/embeddings", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    if fragment:
        assert fragment in error["message"]
    assert fake.embed_requests == []


async def test_models_of_the_other_task_are_400s_and_unknown_models_404s():
    backends = {"vec": FakeEmbedder("vec"), "chat": FakeBackend("chat")}
    async with served(backends, [entry("vec"), entry("chat", task="generate")]) as client:
        wrong = await client.post("/v1/embeddings", json={"model": "chat", "input": "x"})
        messages = [{"role": "user", "content": "hi"}]
        reverse = await client.post(
            "/v1/chat/completions", json={"model": "vec", "messages": messages}
        )
        unknown = await client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    for reply, endpoint in ((wrong, "/v1/embeddings"), (reverse, "/v1/chat/completions")):
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert (error["param"], error["code"]) == ("model", "model_not_supported")
        assert endpoint in error["message"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
