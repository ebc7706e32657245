"""OpenAI wire types for embeddings (``POST /v1/embeddings``): the request keeps unknown fields
for an OpenAI-compatible upstream (the relay); the response is exact. A leaf: pydantic and
``backends.openai_types`` only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from backends.openai_types import OpenAIRequest
from backends.wire_base import WireResponse

# OpenAI's limit on the inputs of one request.
MAX_EMBEDDING_INPUTS = 2048


class CreateEmbeddingRequest(OpenAIRequest):
    """``input``: a text, a list of texts, token ids, or a list of token-id lists; never empty,
    at most ``MAX_EMBEDDING_INPUTS`` inputs. ``dimensions`` is honoured only where the model
    can (else a 400 from the backend). Unknown fields are kept for a relay."""

    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, str):
            if not value:
                raise ValueError("must not be an empty string")
            return value
        if not value:
            raise ValueError("must not be an empty list")
        if len(value) > MAX_EMBEDDING_INPUTS and not isinstance(value[0], int):
            raise ValueError(f"{len(value)} items; at most {MAX_EMBEDDING_INPUTS} are allowed")
        for index, item in enumerate(value):
            if item == "" or item == []:
                raise ValueError(f"item {index} is empty")
        return value


class Embedding(WireResponse):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(WireResponse):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(WireResponse):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
