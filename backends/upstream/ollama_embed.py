"""Embeddings from an upstream Ollama over its native ``POST /api/embed``: the translation both
ways, as pure functions (table-tested). Inputs go as one ``input`` list with the request's
``truncate`` (false unless the client asked Ollama's default: an over-long input is then a 400,
as OpenAI answers, not silently cut); ``usage`` is
Ollama's ``prompt_eval_count``. Ollama takes text only: token-id inputs are refused by name.
"""

from __future__ import annotations

from typing import Any

from backends.embeddings import EmbeddingRequest, EmbeddingResult, float32_vector
from backends.errors import UnsupportedParameterError, UpstreamError
from backends.upstream.settings import OllamaSettings


def to_ollama_embed_request(request: EmbeddingRequest, settings: OllamaSettings) -> dict[str, Any]:
    """The ``/api/embed`` body for ``request``."""
    texts = []
    for index, item in enumerate(request.inputs):
        if not isinstance(item, str):
            raise UnsupportedParameterError(
                f"input[{index}] is token ids; the ollama backend embeds text only",
                param="input",
            )
        texts.append(item)
    body: dict[str, Any] = {
        "model": settings.remote_model,
        "input": texts,
        "truncate": request.truncate,
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    options = {"num_ctx": settings.num_ctx} if settings.num_ctx is not None else {}
    if options:
        body["options"] = options
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    return body


def from_ollama_embed_reply(
    reply: dict[str, Any], inputs: int, replica: str | None
) -> EmbeddingResult:
    """The result of an ``/api/embed`` reply for ``inputs`` texts; a reply of another shape
    raises ``UpstreamError``."""
    vectors = reply.get("embeddings")
    if not isinstance(vectors, list) or len(vectors) != inputs:
        got = len(vectors) if isinstance(vectors, list) else "no"
        raise UpstreamError(f"upstream ollama sent {got} embeddings for {inputs} inputs")
    try:
        converted = tuple(float32_vector(vector) for vector in vectors)
    except TypeError as exc:
        raise UpstreamError(
            "upstream ollama sent an embedding that is not a list of numbers"
        ) from exc
    tokens = reply.get("prompt_eval_count")
    return EmbeddingResult(converted, int(tokens) if isinstance(tokens, int) else 0, replica)
