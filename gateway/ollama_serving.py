"""The Ollama surface's ``open`` steps for ``gateway.dispatch.open_first``: load the model if
it is not (timed: ``load_duration``), check ``options.num_ctx`` against its window, start it,
and encode its answer (``gateway.ollama_stream``). Embeddings go through ``Embedder.embed`` or,
for an OpenAI-compatible upstream, its ``/embeddings`` relayed and read back.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response

from backends.embedding_types import CreateEmbeddingRequest
from backends.embeddings import EmbeddingRequest, EmbeddingResult, float32_vector
from backends.errors import InvalidRequestError, UpstreamError
from backends.protocol import Backend, Embedder, HasCapabilities, OpenAIRelay, Relayed
from backends.requests import GenerationRequest
from backends.settings import parse_duration
from gateway.dispatch import Primed, prime
from gateway.lifecycle import ModelBusyError, ModelLifecycle
from gateway.ollama_stream import (
    OllamaLineBuilder,
    Surface,
    Timings,
    load_reply,
    ndjson_lines,
    whole_answer,
)
from gateway.ollama_surface import check_num_ctx
from gateway.request_models import load_wait_ns


@dataclass(frozen=True)
class Ask:
    """One generation as the surface asked it: which route, the name the client sent (echoed
    in every line), the core request, ``options.num_ctx``, and when the handler started."""

    surface: Surface
    model: str
    request: GenerationRequest
    num_ctx: int | None
    started: int


async def _ready(
    backend: Backend, timings: Timings, num_ctx: int | None, thinking: str | None = None
) -> None:
    """Load ``backend`` if it is not; check ``num_ctx`` and, when ``thinking`` (the model name
    the client sent) asks to think, that the model can."""
    if not backend.loaded:
        before = time.monotonic_ns()
        await backend.load()
        timings.load = time.monotonic_ns() - before
    else:  # loaded by the lifecycle's lease for this request (gateway.lifecycle)
        timings.load = load_wait_ns()
    if (num_ctx is not None or thinking) and isinstance(backend, HasCapabilities):
        found = await backend.capabilities()
        check_num_ctx(num_ctx, found.context_length if found else None, backend.model)
        # Ollama refuses `think` for a model that cannot; an OpenAI-compatible upstream's
        # models list does not say whether it can (tools "passthrough"): it decides itself
        if thinking and found is not None and not found.reasoning and found.tools != "passthrough":
            raise InvalidRequestError(f'"{thinking}" does not support thinking', param="think")


async def open_stream(backend: Backend, ask: Ask) -> Primed[bytes]:
    """Start ``backend``: its NDJSON lines, the first one arrived."""
    timings = Timings(started=ask.started)
    await _ready(backend, timings, ask.num_ctx, ask.model if ask.request.reasoning else None)
    timings.reached_engine()
    events = await backend.generate(ask.request)
    builder = OllamaLineBuilder(ask.surface, ask.model, timings)
    return await prime(ndjson_lines(events, builder), events.replica)


async def complete(backend: Backend, ask: Ask) -> Relayed:
    """``stream: false``: the whole answer as one JSON object."""
    timings = Timings(started=ask.started)
    await _ready(backend, timings, ask.num_ctx, ask.model if ask.request.reasoning else None)
    timings.reached_engine()
    events = await backend.generate(ask.request)
    builder = OllamaLineBuilder(ask.surface, ask.model, timings)
    return Relayed(await whole_answer(events, builder), events.replica)


async def load(backend: Backend, surface: Surface, model: str) -> Relayed:
    """A load request (no messages, an empty prompt): load the model if it is not."""
    await backend.load()
    return Relayed(load_reply(surface, model))


def keep_alive(
    lifecycle: ModelLifecycle | None, backend: Backend, value: float | str | None
) -> bool:
    """Apply a request's ``keep_alive`` to ``backend``'s model (``gateway.lifecycle``): how
    long it stays loaded once idle (seconds or a duration such as ``"5m"``; negative: keep it
    loaded). True for ``0``: unload it (a load request then answers ``unload``). 400 for a
    value that is not a duration."""
    if value is None or lifecycle is None:
        return value == 0
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="keep_alive") from None
    lifecycle.set_keep_alive(backend.model, None if seconds < 0 else seconds)
    return seconds == 0


async def unload(
    lifecycle: ModelLifecycle | None, backend: Backend, surface: Surface, model: str
) -> Response:
    """A load request with ``keep_alive: 0``: unload the model now, or once its requests in
    flight have finished (its idle timeout is 0 now)."""
    if lifecycle is not None:
        with contextlib.suppress(ModelBusyError):
            await lifecycle.unload(backend.model)
    return Response(load_reply(surface, model, "unload"), media_type="application/json")


@dataclass(frozen=True)
class Embedded:
    """Vectors as JSON numbers, the tokens read, and the timings."""

    vectors: list[list[float]]
    prompt_tokens: int
    timings: Timings
    replica: str | None = None

    def durations(self) -> dict[str, int]:
        durations = self.timings.durations()
        return {k: durations[k] for k in ("total_duration", "load_duration")}


async def embed(
    backend: Backend, request: EmbeddingRequest, started: int, num_ctx: int | None
) -> Embedded:
    """Embed ``request``'s inputs (none: only load the model)."""
    timings = Timings(started=started)
    await _ready(backend, timings, num_ctx)
    if not request.inputs:
        return Embedded([], 0, timings)
    if isinstance(backend, Embedder):
        result = await backend.embed(request)
    elif isinstance(backend, OpenAIRelay):
        result = await _relayed_embeddings(backend, request)
    else:
        raise InvalidRequestError(
            f"model '{request.model}' cannot make embeddings",
            param="model",
            code="model_not_supported",
        )
    vectors = [vector.tolist() for vector in result.vectors]
    return Embedded(vectors, result.prompt_tokens, timings, result.replica)


async def _relayed_embeddings(relay: OpenAIRelay, request: EmbeddingRequest) -> EmbeddingResult:
    texts = [text for text in request.inputs if isinstance(text, str)]  # the surface's: text
    wire = CreateEmbeddingRequest(model=request.model, input=texts, dimensions=request.dimensions)
    relayed = await relay.relay("/embeddings", wire)
    try:
        data: Any = json.loads(relayed.data)
        items = sorted(data["data"], key=lambda item: item["index"])
        vectors = tuple(float32_vector(item["embedding"]) for item in items)
        tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError("the upstream's embeddings answer could not be read") from exc
    return EmbeddingResult(vectors, tokens, relayed.replica)
