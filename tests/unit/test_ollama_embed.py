"""Ollama's /api/embed translation: the body sent, the reply read, the refusals."""

from __future__ import annotations

import pytest

from backends.embeddings import EmbeddingRequest
from backends.errors import UnsupportedParameterError, UpstreamError
from backends.upstream.ollama_embed import from_ollama_embed_reply, to_ollama_embed_request
from backends.upstream.settings import OllamaSettings


def settings(**extra: object) -> OllamaSettings:
    return OllamaSettings(
        name="nomic", backend="ollama", base_url="http://x", task="embed", **extra
    )


@pytest.mark.parametrize(
    ("request_", "entry", "body"),
    [
        (
            EmbeddingRequest("nomic", ("a", "b")),
            settings(),
            {"model": "nomic", "input": ["a", "b"], "truncate": False},
        ),
        (  # an Ollama client's default, passed on
            EmbeddingRequest("nomic", ("a",), truncate=True),
            settings(),
            {"model": "nomic", "input": ["a"], "truncate": True},
        ),
        (
            EmbeddingRequest("nomic", ("a",), dimensions=64),
            settings(upstream_model="nomic-embed-text:v1.5", num_ctx=512, keep_alive="5m"),
            {
                "model": "nomic-embed-text:v1.5",
                "input": ["a"],
                "truncate": False,
                "dimensions": 64,
                "options": {"num_ctx": 512},
                "keep_alive": "5m",
            },
        ),
    ],
)
def test_the_body_sent_to_api_embed(request_, entry, body):
    assert to_ollama_embed_request(request_, entry) == body


def test_token_ids_are_refused_by_name():
    with pytest.raises(UnsupportedParameterError) as caught:
        to_ollama_embed_request(EmbeddingRequest("nomic", ("a", (1, 2))), settings())
    assert (caught.value.param, "input[1]" in caught.value.message) == ("input", True)


def test_the_reply_gives_float32_vectors_and_ollamas_prompt_count():
    reply = {"embeddings": [[0.5, 0.25], [1, 0]], "prompt_eval_count": 7}
    result = from_ollama_embed_reply(reply, 2, "http://r1")
    assert [list(v) for v in result.vectors] == [[0.5, 0.25], [1.0, 0.0]]
    assert (result.prompt_tokens, result.replica) == (7, "http://r1")


@pytest.mark.parametrize(
    "reply",
    [{"embeddings": [[0.5]]}, {"embeddings": None}, {}, {"embeddings": [["a"], [1]]}],
)
def test_a_reply_of_another_shape_is_an_upstream_error(reply):
    with pytest.raises(UpstreamError):
        from_ollama_embed_reply(reply, 2, None)
