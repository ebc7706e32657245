"""The OpenAI embeddings surface's translator: a ``CreateEmbeddingRequest`` into the core's
``EmbeddingRequest``, an ``EmbeddingResult`` back into OpenAI's ``list`` of ``embedding``
objects (floats, or base64 of little-endian float32 as the openai SDK decodes it) — or, for a
backend that relays OpenAI, the upstream's own answer. The route is in
``gateway.embeddings_api``."""

from __future__ import annotations

import base64

from backends.embedding_types import (
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
)
from backends.embeddings import EmbeddingInput, EmbeddingRequest, EmbeddingResult, Vector
from backends.embeddings import little_endian_bytes as le_bytes
from backends.errors import InvalidRequestError
from backends.protocol import Backend, Embedder, Relayed
from gateway.dispatch import relays


def to_embedding_request(body: CreateEmbeddingRequest) -> EmbeddingRequest:
    """The core request: one input per text or token-id list (a flat list of ints is one)."""
    return EmbeddingRequest(
        model=body.model,
        inputs=_inputs(body.input),
        dimensions=body.dimensions,
        user=body.user,
    )


def _inputs(value: str | list[str] | list[int] | list[list[int]]) -> tuple[EmbeddingInput, ...]:
    if isinstance(value, str):
        return (value,)
    token_ids: list[int] = []  # a flat list of ints is one input
    inputs: list[EmbeddingInput] = []
    for item in value:
        if isinstance(item, int):
            token_ids.append(item)
        else:
            inputs.append(item if isinstance(item, str) else tuple(item))
    return (tuple(token_ids),) if token_ids else tuple(inputs)


def encode_vector(vector: Vector, encoding_format: str) -> list[float] | str:
    """``float``: the float32 values as JSON numbers (exactly what base64 decodes to);
    ``base64``: the little-endian float32 bytes, base64-encoded."""
    if encoding_format == "base64":
        return base64.b64encode(le_bytes(vector)).decode("ascii")
    return vector.tolist()


def to_response(result: EmbeddingResult, body: CreateEmbeddingRequest) -> CreateEmbeddingResponse:
    """OpenAI's answer, ``model`` as the client sent it."""
    return CreateEmbeddingResponse(
        data=[
            Embedding(index=index, embedding=encode_vector(vector, body.encoding_format))
            for index, vector in enumerate(result.vectors)
        ],
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


async def create_embeddings(backend: Backend, body: CreateEmbeddingRequest) -> Relayed:
    """``backend``'s answer to ``body`` as the JSON bytes the client gets."""
    if relays(backend):
        return await backend.relay("/embeddings", body)  # as sent, vendor extras included
    if not isinstance(backend, Embedder):
        raise InvalidRequestError(
            f"model '{body.model}' cannot make embeddings",
            param="model",
            code="model_not_supported",
        )
    result = await backend.embed(to_embedding_request(body))
    return Relayed(to_response(result, body).model_dump_json().encode(), result.replica)
