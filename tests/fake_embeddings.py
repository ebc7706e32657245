"""The embedding endpoints of the fake upstreams (``tests.fake_upstreams``): Ollama's
``POST /api/embed`` and the OpenAI-compatible ``POST /v1/embeddings`` (vLLM's shape), as pure
functions from a parsed body to ``(status, payload)``.

Vectors are deterministic stand-ins: ``fake_vector`` hashes the input into ``dimensions``
numbers and normalises them (Ollama and vLLM both return unit vectors), so the same input
always gets the same vector and different inputs different ones. Prompt tokens follow the
fakes' rule: whitespace-separated words of a text; the length of a token-id list.

Faithful: Ollama's ``input`` (a string or a list of strings), ``truncate`` (default true; false
with an input longer than ``num_ctx`` is 400 ``the input length exceeds the context length``),
``dimensions`` (cuts and renormalises), ``prompt_eval_count``, nanosecond durations, 404 for an
unknown model, 400 ``model is required``. OpenAI: ``input`` as text(s) or token ids,
``encoding_format`` ``float`` | ``base64`` (little-endian float32), ``dimensions``, the
``usage`` block, 404 ``model_not_found``, 400 for an empty input (``param: input``).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any

DEFAULT_DIMENSIONS = 16


def fake_vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector determined by ``item``, float32-exact."""
    seed = hashlib.sha256(repr(item).encode()).digest()
    raw = [(seed[i % len(seed)] ^ (i * 37 % 256)) / 127.5 - 1.0 for i in range(dimensions)]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    # round through float32, as a real server's vectors are
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in raw]


def _tokens(item: str | list[int]) -> int:
    return len(item.split()) if isinstance(item, str) else len(item)


def ollama_embed(body: dict[str, Any], known: bool, num_ctx: int) -> tuple[int, dict[str, Any]]:
    """``/api/embed`` for ``body``; ``known``: the model exists; ``num_ctx``: its context."""
    started = time.monotonic_ns()
    name = body.get("model") or ""
    if not name:
        return 400, {"error": "model is required"}
    if not known:
        return 404, {"error": f'model "{name}" not found, try pulling it first'}
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return 400, {"error": "invalid input type"}
    options = body.get("options") or {}
    limit = int(options.get("num_ctx") or num_ctx)
    if body.get("truncate") is False and any(_tokens(t) > limit for t in texts):
        return 400, {"error": "the input length exceeds the context length"}
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    vectors = [_renormalised(fake_vector(t)[:dims]) for t in texts]
    counted = sum(min(_tokens(t), limit) for t in texts)
    elapsed = max(1, time.monotonic_ns() - started)
    return 200, {
        "model": name,
        "embeddings": vectors,
        "total_duration": elapsed,
        "load_duration": 0,
        "prompt_eval_count": counted,
    }


def _renormalised(vector: list[float]) -> list[float]:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in vector]


def openai_embed(
    body: dict[str, Any], known: bool
) -> tuple[int, dict[str, Any] | tuple[str, str | None, str | None]]:
    """``/v1/embeddings`` for ``body``: the reply, or an error as (message, param, code)."""
    name = body.get("model")
    if not known:
        return 404, (f"The model `{name}` does not exist.", None, "model_not_found")
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        items = [raw]
    else:
        items = raw if isinstance(raw, list) else []
    if not items or any(not item for item in items):
        return 400, ("'$.input' is invalid. Please check the API reference.", "input", None)
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    base64_wanted = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector = _renormalised(fake_vector(item)[:dims])
        encoded: Any = vector
        if base64_wanted:
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"index": index, "object": "embedding", "embedding": encoded})
    tokens = sum(_tokens(item) for item in items)
    return 200, {
        "id": f"embd-{hashlib.md5(repr(items).encode()).hexdigest()}",
        "object": "list",
        "created": int(time.time()),
        "model": name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }
