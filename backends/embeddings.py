"""The core embedding request and result every embedding surface and backend speaks.

A surface (``gateway.openai_embeddings``) translates its wire request into an
``EmbeddingRequest``; a backend that serves embeddings (``backends.protocol.Embedder``) answers
with an ``EmbeddingResult``. Vectors are float32 (``array('f')``), as engines compute them and
as OpenAI's base64 encoding carries them. This module is a leaf: the standard library only.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    # A float32 vector (typecode "f"); array is generic only to type checkers.
    Vector: TypeAlias = array[float]
else:
    Vector: TypeAlias = array

# One input: a text, or token ids sent as they are (no special tokens added).
EmbeddingInput = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """``inputs`` is never empty and holds no empty text or token list (the surface checks).
    ``dimensions``: the length the client wants (None: the model's own). ``truncate``: an
    input longer than the model reads is cut to fit (Ollama's default) rather than refused
    (OpenAI's answer, a 400)."""

    model: str
    inputs: tuple[EmbeddingInput, ...]
    dimensions: int | None = None
    user: str | None = None
    truncate: bool = False


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One float32 vector per input, in input order; ``prompt_tokens`` counts every token the
    model read (special tokens included); ``replica`` is the upstream that served it, if any."""

    vectors: tuple[Vector, ...]
    prompt_tokens: int
    replica: str | None = None


def float32_vector(values: Iterable[float]) -> Vector:
    """A float32 vector from numbers (an upstream's JSON list)."""
    return array("f", values)


def float32_from_bytes(data: bytes) -> Vector:
    """A float32 vector from native-order float32 bytes (a model's output row)."""
    vector = array("f")
    vector.frombytes(data)
    return vector


def little_endian_bytes(vector: Vector) -> bytes:
    """The vector as little-endian float32 bytes (OpenAI's base64 payload)."""
    if sys.byteorder == "little":
        return vector.tobytes()
    swapped = array("f", vector)
    swapped.byteswap()
    return swapped.tobytes()
