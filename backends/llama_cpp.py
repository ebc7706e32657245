"""llama-cpp-python engine: a GGUF served in-process, one request at a time per model.

``LlamaCppBackend`` owns a ``SerialWorker`` (one thread, bounded FIFO queue: a full queue is
a 429, never a hang) and a ``LlamaCppEngine`` living on that thread. ``plan_generation`` is
the one pure translation from an OpenAI request to llama.cpp terms: every field is honoured
or refused with ``UnsupportedParameterError`` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from backends._threaded import SerialWorker
from backends.base import (
    ChunkBuilder,
    Health,
    collect_completion,
    plain_messages,
    refuse_tools,
    stream_for_client,
)
from backends.errors import (
    BackendUnavailableError,
    GatewayError,
    InternalError,
)
from backends.events import events_to_chunks
from backends.llama_cpp_engine import EngineStats, GenerationPlan, LlamaCppEngine
from backends.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
)
from backends.settings import LlamaCppSettings
from backends.sources import resolve_source

log = logging.getLogger(__name__)

# llama.cpp server's sampling defaults, used where the request leaves a knob unset.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05


def plan_generation(request: ChatCompletionRequest, settings: LlamaCppSettings) -> GenerationPlan:
    """Translate ``request`` for llama.cpp; raise ``UnsupportedParameterError`` for what it
    cannot do (tool calling, non-text content)."""
    refuse_tools(request, "llama_cpp")
    messages = plain_messages(request.messages, "llama_cpp")
    json_schema: dict[str, Any] | None = None
    json_object = False
    if request.response_format is not None:
        if request.response_format.type == "json_object":
            json_object = True
        elif request.response_format.type == "json_schema":
            spec = request.response_format.json_schema
            json_schema = (spec.schema_ if spec else None) or {}
            json_object = not json_schema
    top_k = request.top_k if request.top_k is not None else DEFAULT_TOP_K
    return GenerationPlan(
        messages=messages,
        max_new_tokens=request.max_new_tokens,
        temperature=request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE,
        top_p=request.top_p if request.top_p is not None else DEFAULT_TOP_P,
        top_k=max(top_k, 0),
        min_p=request.min_p if request.min_p is not None else DEFAULT_MIN_P,
        seed=request.seed if request.seed is not None else settings.seed,
        stops=request.stop_sequences,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias={int(k): v for k, v in (request.logit_bias or {}).items()},
        n=request.n or 1,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        json_schema=json_schema,
        json_object=json_object,
    )


class LlamaCppBackend:
    """A GGUF model served by llama-cpp-python.

    ``load``/``unload`` are idempotent. ``stream`` raises ``QueueFullError`` (429) when
    ``max_queue`` requests already wait, ``BackendUnavailableError`` (503) when the model is not
    loaded and cannot be, ``ContextLengthExceededError``/``UnsupportedParameterError`` (400)
    for requests it cannot serve. Closing a stream stops its generation within about a token.
    """

    kind = "llama_cpp"

    def __init__(self, settings: LlamaCppSettings, base_dir: Path | None = None) -> None:
        self.model = settings.name
        self.settings = settings
        self.stats = EngineStats()
        self._base_dir = base_dir
        self._worker = SerialWorker(settings.name, settings.max_queue)
        self._engine: LlamaCppEngine | None = None
        self._load_error: str | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    async def load(self) -> None:
        if self._engine is not None:
            return
        if self._closed:
            raise BackendUnavailableError(f"model '{self.model}' is shut down")

        def build() -> LlamaCppEngine:
            if self._engine is not None:  # loaded while this call waited its turn
                return self._engine
            path = resolve_source(self.model, self.settings.source, self._base_dir)
            try:
                return LlamaCppEngine.load(path, self.settings, self.stats)
            except GatewayError:
                raise
            except Exception as exc:
                raise BackendUnavailableError(
                    f"model '{self.model}' failed to load from {path}: {exc}"
                ) from exc

        try:
            self._engine = await self._worker.run(build)
            self._load_error = None
        except GatewayError as exc:
            self._load_error = exc.message
            raise

    async def unload(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await self._worker.run(engine.close)

    async def health(self) -> Health:
        if self._engine is not None:
            return Health("ok")
        if self._load_error is not None:
            return Health("error", self._load_error)
        return Health("unloaded")

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        return await collect_completion(self._generate(request))

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return stream_for_client(self._generate(request), request.include_usage)

    async def aclose(self) -> None:
        self._closed = True
        await self.unload()
        self._worker.shutdown()

    async def _generate(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        plan = plan_generation(request, self.settings)
        if self._engine is None:
            await self.load()
        chunks = ChunkBuilder(model=request.model)
        engine = self._engine
        if engine is None:
            raise BackendUnavailableError(f"model '{self.model}' is not loaded", retry_after=5)
        events = self._worker.stream(lambda stop: engine.generate(plan, stop))
        try:
            async for chunk in events_to_chunks(events, chunks):
                yield chunk
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("llama.cpp engine failed for model %s", self.model)
            raise InternalError("the engine failed while generating") from exc
