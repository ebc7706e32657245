"""``LocalBackend``: the Backend protocol for an in-process engine, written once for llama.cpp
and transformers (docs/architecture.md, "The engine seam").

It owns the lifecycle (load / unload / health, load errors kept for ``/health``) and the path of
a request: capability checks before the model loads; rendering, tokenizing and the checks that
need the loaded model in a worker thread, *before* the request queues; then the engine's event
stream behind one error wrapper. A family subclasses it and supplies ``_load_engine`` (blocking,
run in a worker thread) returning a ``LocalEngine``, and for embedding models (``task: embed``)
``_load_embedder`` returning a ``LocalEmbedder`` (``backends.local.embedding``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import (
    BackendUnavailableError,
    GatewayError,
    InternalError,
    InvalidRequestError,
)
from backends.events import Event
from backends.local.chat import ChatFeatures, Prompt, probe_features, render_prompt, special_ids
from backends.local.embedding import EmbeddingStats, LocalEmbedder
from backends.local.engine import EngineStats, LocalEngine
from backends.local.fit import fit_prompt
from backends.local.grammar import build_grammar, compile_grammar
from backends.local.plan import GenerationPlan, check_request, make_plan
from backends.model_types import ModelCapabilities, ModelPlacement
from backends.protocol import EventStream, Health, OpenStream
from backends.requests import GenerationRequest
from backends.settings import InProcessSettings
from backends.weight_sources import LoadProgress, resolve_source

log = logging.getLogger(__name__)

T = TypeVar("T")


class LocalBackend:
    """A model served in-process. ``load``/``unload`` are idempotent. ``generate`` raises
    ``UnsupportedParameterError`` / ``InvalidRequestError`` / ``ContextLengthExceededError``
    (400) before the request queues, ``QueueFullError`` (429) when the engine's queue is full,
    ``BackendUnavailableError`` (503) when the model is not loaded and cannot be. Closing the
    stream it returns stops the request's generation within about one decode step.

    A model of ``task: embed`` loads a ``LocalEmbedder`` instead of an engine: ``embed`` serves
    it and ``generate`` refuses (400), as ``embed`` does for a text-generation model."""

    kind: ClassVar[str]

    def __init__(self, settings: InProcessSettings, base_dir: Path | None = None) -> None:
        self.model = settings.name
        self._settings = settings
        self._base_dir = base_dir
        self._engine: LocalEngine | None = None
        self._embedder: LocalEmbedder | None = None
        self._features = ChatFeatures()
        self._load_error: str | None = None
        self._loading = asyncio.Lock()
        self._unloading = False
        self._planning = _ThreadCalls()
        self._closed = False
        # seconds the last successful load took (read by /metrics); None: never loaded
        self.load_seconds: float | None = None
        # the download of this model's weights while it loads (hf:, modelscope:), else None
        self.load_progress: LoadProgress | None = None

    def _fetch_weights(self, source: str) -> Path:
        """The local path of ``source`` (blocking: a worker thread), its download counted in
        ``load_progress`` meanwhile."""
        progress = LoadProgress(self.model, source)
        self.load_progress = progress
        try:
            return resolve_source(self.model, source, self._base_dir, progress)
        finally:
            self.load_progress = None

    def _load_engine(self) -> LocalEngine:
        """Load the model (blocking; runs in a worker thread). A ``GatewayError`` it raises is
        kept as is; anything else becomes ``BackendUnavailableError`` naming the model."""
        raise NotImplementedError

    def _load_embedder(self) -> LocalEmbedder:
        """Load an embedding model (blocking, a worker thread; errors as ``_load_engine``)."""
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return self._engine is not None or self._embedder is not None

    @property
    def engine(self) -> LocalEngine | None:
        return self._engine

    @property
    def stats(self) -> EngineStats | None:
        """The loaded engine's counters (None until loaded)."""
        return self._engine.stats if self._engine is not None else None

    @property
    def waiting(self) -> int:
        """Requests admitted but not started."""
        return self._engine.waiting if self._engine is not None else 0

    @property
    def embedding_stats(self) -> EmbeddingStats | None:
        """The loaded embedding model's counters (None until loaded, or not an embedder)."""
        return self._embedder.stats if self._embedder is not None else None

    async def load(self) -> None:
        async with self._loading:
            if self.loaded:
                return
            if self._closed:
                raise BackendUnavailableError(f"model '{self.model}' is shut down")
            began = time.perf_counter()
            try:
                if self._settings.task == "embed":
                    self._embedder = await asyncio.to_thread(self._built, self._load_embedder)
                else:
                    engine, features = await asyncio.to_thread(self._built, self._build)
                    self._engine, self._features = engine, features
            except GatewayError as exc:
                self._load_error = exc.message
                raise
            self._load_error = None
            self.load_seconds = time.perf_counter() - began

    def _build(self) -> tuple[LocalEngine, ChatFeatures]:
        engine = self._load_engine()
        return engine, probe_features(engine, self._settings)

    def _built(self, build: Callable[[], T]) -> T:
        try:
            return build()
        except GatewayError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(
                f"model '{self.model}' failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    def placement(self) -> ModelPlacement | None:
        """Where the loaded model runs (None until loaded)."""
        if self._embedder is not None:
            return self._embedder.model.placement
        return self._engine.placement if self._engine is not None else None

    async def capabilities(self) -> ModelCapabilities | None:
        """What the loaded model supports, learnt from its template and engine (None until
        loaded)."""
        engine, features = self._engine, self._features
        if self._embedder is not None:
            return ModelCapabilities(context_length=self._embedder.model.max_tokens)
        if engine is None:
            return None
        return ModelCapabilities(
            tools=features.tools,
            tool_parser=features.tool_format.name if features.tool_format else None,
            json_schema=True,
            reasoning=features.reasoning is not None,
            reasoning_parser=features.reasoning.name if features.reasoning else None,
            context_length=engine.limits.context_window,
        )

    async def unload(self) -> None:
        """Let go of the model: requests still being planned finish planning first (they then
        find the engine gone: 503), then the engine closes (``LocalEngine.aclose``)."""
        async with self._loading:
            embedder, self._embedder = self._embedder, None
            if embedder is not None:
                await embedder.aclose()
            engine, self._engine = self._engine, None
            if engine is None:
                return
            self._unloading = True
            try:
                await asyncio.to_thread(self._planning.wait_idle)
                await engine.aclose()
            finally:
                self._unloading = False

    async def health(self) -> Health:
        if self.loaded:
            return Health("ok")
        if self._load_error is not None:
            return Health("error", self._load_error)
        if self._loading.locked() and not self._unloading:
            return Health("loading")
        return Health("unloaded")

    async def aclose(self) -> None:
        self._closed = True
        await self.unload()

    async def generate(self, request: GenerationRequest, adapter: str | None = None) -> EventStream:
        """Serve ``request`` (on ``adapter``, a LoRA adapter of this model, if given); returns
        once the first event is ready. See the class docstring for what it raises."""
        engine = await self._generation_engine(request)
        plan = await asyncio.to_thread(self._planning.run, self._plan, engine, request, adapter)
        events = self._guarded(engine.submit(plan))
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise InternalError("the engine ended a request without output") from None
        except BaseException:
            await events.aclose()
            raise
        return OpenStream(_prepend(first, events), cleanup=events.aclose)

    async def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt tokens ``generate`` would read for ``request`` (``TokenCounter``): the
        prompt is rendered and tokenized in a worker thread, nothing is queued or decoded."""
        engine = await self._generation_engine(request)
        return await asyncio.to_thread(self._planning.run, self._count, engine, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed ``request``'s inputs (``backends.protocol.Embedder``)."""
        if self._settings.task != "embed":
            raise InvalidRequestError(
                f"model '{self.model}' is a text-generation model: it makes no embeddings "
                "(serve an embedding model with `task: embed`)",
                param="model",
                code="model_not_supported",
            )
        if self._embedder is None:
            await self.load()
        embedder = self._embedder
        if embedder is None:  # unloaded while this request waited for the load
            raise BackendUnavailableError(f"model '{self.model}' is not loaded", retry_after=5)
        try:
            return await embedder.embed(request)
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("the %s engine failed to embed for %s", self.kind, self.model)
            raise InternalError("the engine failed while embedding") from exc

    async def _generation_engine(self, request: GenerationRequest) -> LocalEngine:
        """The loaded engine for a text-generation ``request`` (loading it if needed), after
        the checks that need no model."""
        if self._settings.task == "embed":
            raise InvalidRequestError(
                f"model '{self.model}' is an embedding model: it serves /v1/embeddings, "
                "not text generation",
                param="model",
                code="model_not_supported",
            )
        check_request(request, self.kind)
        if self._engine is None:
            await self.load()
        engine = self._engine
        if engine is None:  # unloaded while this request waited for the load
            raise BackendUnavailableError(f"model '{self.model}' is not loaded", retry_after=5)
        return engine

    def _count(self, engine: LocalEngine, request: GenerationRequest) -> int:
        """The length of ``request``'s rendered prompt (a worker thread, like ``_plan``)."""
        if self._engine is not engine:
            raise BackendUnavailableError(f"model '{self.model}' was unloaded", retry_after=5)
        try:
            return len(self._prompt(engine, request).tokens)
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("the %s engine failed to count tokens for %s", self.kind, self.model)
            raise InternalError("the engine failed while reading the request") from exc

    def _prompt(self, engine: LocalEngine, request: GenerationRequest) -> Prompt:
        features = self._features
        return fit_prompt(
            request,
            lambda r: render_prompt(r, features, engine),
            engine.limits.context_window,
        )

    def _plan(
        self, engine: LocalEngine, request: GenerationRequest, adapter: str | None
    ) -> GenerationPlan:
        """Render, tokenize and check ``request`` (a worker thread, counted by ``_planning``,
        so that ``unload`` never frees a model this is reading)."""
        if self._engine is not engine:
            raise BackendUnavailableError(f"model '{self.model}' was unloaded", retry_after=5)
        try:
            features = self._features
            prompt = self._prompt(engine, request)
            plan = make_plan(request, prompt.tokens, engine.limits, adapter)
            source = build_grammar(request, prompt.spec, engine.special_tokens)
            grammar = None
            if source is not None:
                grammar = compile_grammar(
                    source, engine.grammar_tokenizer(), engine.limits.vocab_size
                )
            visible = special_ids(engine.special_tokens, features.markers)
            plan = replace(plan, spec=prompt.spec, grammar=grammar, visible=visible)
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("the %s engine failed to plan a request for %s", self.kind, self.model)
            raise InternalError("the engine failed while reading the request") from exc
        return plan

    async def _guarded(self, events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
        """``events`` with foreign exceptions turned into ``InternalError`` (logged), closed
        explicitly however this ends."""
        try:
            async for event in events:
                yield event
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("the %s engine failed for model %s", self.kind, self.model)
            raise InternalError("the engine failed while generating") from exc
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


async def _prepend(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()


class _ThreadCalls:
    """Counts calls running in worker threads; ``wait_idle`` blocks until there are none."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._idle:
            self._count += 1
        try:
            return fn(*args)
        finally:
            with self._idle:
                self._count -= 1
                if self._count == 0:
                    self._idle.notify_all()

    def wait_idle(self) -> None:
        with self._idle:
            while self._count:
                self._idle.wait()
