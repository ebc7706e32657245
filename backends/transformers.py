"""Hugging Face ``transformers`` engine: one model in memory, concurrent requests batched.

``TransformersBackend`` loads the model (``backends.hf_loading``) and runs a
``BatchScheduler`` (``backends.batching``) that decodes every admitted request in one forward
pass per step. Each LoRA adapter of the entry is served as its own public model by an
``AdapterBackend`` over the same base weights; requests for different adapters share steps.

``plan_generation`` is the one translation from an OpenAI request to engine terms: every
field is honoured or refused with ``UnsupportedParameterError`` naming it. torch and
transformers are imported only when the model loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from backends.base import (
    Backend,
    ChunkBuilder,
    Health,
    collect_completion,
    plain_messages,
    refuse_tools,
    stream_for_client,
)
from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from backends.events import events_to_chunks
from backends.generation import GenerationJob, SamplingParams
from backends.hf_loading import default_cache_dir
from backends.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from backends.settings import TransformersSettings

if TYPE_CHECKING:
    from backends.batching import BatchScheduler, BatchStats
    from backends.hf_loading import LoadedModel

log = logging.getLogger(__name__)

KIND = "transformers"


def sampling_params(
    request: ChatCompletionRequest, defaults: dict[str, float], seed: int | None
) -> SamplingParams:
    """The request's sampling settings; unset ones come from the model's generation config
    (``defaults``), then OpenAI's defaults (temperature 1, top_p 1)."""
    refuse_tools(request, KIND)
    if request.response_format is not None and request.response_format.type != "text":
        raise UnsupportedParameterError(
            f"model '{request.model}' ({KIND} backend) cannot constrain output to JSON; "
            "use a llama_cpp model for response_format",
            param="response_format",
        )

    def pick(value: float | None, key: str, fallback: float) -> float:
        return value if value is not None else defaults.get(key, fallback)

    top_k = request.top_k if request.top_k is not None else int(defaults.get("top_k", 0))
    return SamplingParams(
        temperature=pick(request.temperature, "temperature", 1.0),
        top_p=pick(request.top_p, "top_p", 1.0),
        top_k=max(top_k, 0),
        min_p=pick(request.min_p, "min_p", 0.0),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias={int(k): v for k, v in (request.logit_bias or {}).items()},
        seed=request.seed if request.seed is not None else seed,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
    )


def plan_generation(
    request: ChatCompletionRequest,
    loaded: LoadedModel,
    settings: TransformersSettings,
    adapter: str | None,
) -> GenerationJob:
    """Translate and tokenize ``request`` (blocking: the chat template and the tokenizer run
    here). Raises ``UnsupportedParameterError``, ``InvalidRequestError`` (a template that
    rejects the messages, token ids outside the vocabulary) and
    ``ContextLengthExceededError``."""
    sampling = sampling_params(request, loaded.sampling_defaults, settings.seed)
    n = request.n or 1
    if n > settings.max_batch_size:
        raise UnsupportedParameterError(
            f"n={n} is more than this model's max_batch_size ({settings.max_batch_size})",
            param="n",
        )
    for token_id in sampling.logit_bias:
        if token_id >= loaded.vocab_size:
            raise InvalidRequestError(
                f"logit_bias token id {token_id} is outside the vocabulary "
                f"(0..{loaded.vocab_size - 1})",
                param="logit_bias",
            )
    messages = plain_messages(request.messages, KIND)
    try:
        prompt = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except Exception as exc:  # jinja errors, raise_exception() in templates
        raise InvalidRequestError(
            f"the chat template of model '{request.model}' rejected these messages: {exc}",
            param="messages",
        ) from exc
    prompt = [int(t) for t in prompt]
    return GenerationJob(
        prompt=prompt,
        max_new_tokens=_budget(len(prompt), request.max_new_tokens, loaded.max_context),
        sampling=sampling,
        stops=request.stop_sequences,
        n=n,
        adapter=adapter,
    )


def _budget(prompt_len: int, requested: int | None, context: int) -> int:
    if requested is not None and prompt_len + requested > context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the messages, {requested} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )
    if prompt_len >= context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, your messages "
            f"resulted in {prompt_len} tokens. Please reduce the length of the messages.",
            param="messages",
        )
    return requested if requested is not None else context - prompt_len


class TransformersBackend:
    """A Hugging Face model served in-process with continuous batching.

    ``load``/``unload`` are idempotent; loading runs in a worker thread (a first load from a
    GGUF converts it once, see ``backends.hf_loading``). ``stream`` raises ``QueueFullError``
    (429) when ``max_queue`` requests already wait, ``BackendUnavailableError`` (503) when the
    model is not loaded and cannot be, ``ContextLengthExceededError`` /
    ``UnsupportedParameterError`` / ``InvalidRequestError`` (400). Closing a stream removes
    its sequences from the batch before the next decode step.
    """

    kind = KIND

    def __init__(self, settings: TransformersSettings, base_dir: Path | None = None) -> None:
        self.model = settings.name
        self.settings = settings
        self._base_dir = base_dir
        self._cache_dir = (
            Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
        )
        self._loaded: LoadedModel | None = None
        self._scheduler: BatchScheduler | None = None
        self._load_error: str | None = None
        self._loading = asyncio.Lock()
        self._closed = False
        self._adapters = [AdapterBackend(self, a.name) for a in settings.adapters]

    @property
    def loaded(self) -> bool:
        return self._scheduler is not None

    @property
    def stats(self) -> BatchStats | None:
        """The running engine's counters (None until loaded)."""
        return self._scheduler.stats if self._scheduler is not None else None

    @property
    def loaded_model(self) -> LoadedModel | None:
        return self._loaded

    def variants(self) -> list[Backend]:
        """One backend per LoRA adapter, each its own public model over these weights."""
        return list(self._adapters)

    async def load(self) -> None:
        async with self._loading:
            if self._scheduler is not None:
                return
            if self._closed:
                raise BackendUnavailableError(f"model '{self.model}' is shut down")
            try:
                loaded, scheduler = await asyncio.to_thread(self._build)
            except GatewayError as exc:
                self._load_error = exc.message
                raise
            self._loaded, self._scheduler, self._load_error = loaded, scheduler, None

    def _build(self) -> tuple[LoadedModel, BatchScheduler]:
        try:
            from backends.batching import BatchScheduler
            from backends.hf_loading import load_model
        except ImportError as exc:
            raise BackendUnavailableError(
                f"model '{self.model}' needs torch and transformers: "
                "pip install 'llmgate[transformers]'"
            ) from exc
        loaded = load_model(self.settings, self._base_dir, self._cache_dir)
        scheduler = BatchScheduler(
            loaded,
            name=self.model,
            max_batch_size=self.settings.max_batch_size,
            max_queue=self.settings.max_queue,
            torch_threads=_torch_threads(self.settings, loaded.device),
            prefill_chunk=self.settings.prefill_chunk,
        )
        scheduler.start()
        return loaded, scheduler

    async def unload(self) -> None:
        async with self._loading:
            scheduler, self._scheduler = self._scheduler, None
            self._loaded = None
            if scheduler is not None:
                await asyncio.to_thread(scheduler.close)

    async def health(self) -> Health:
        if self._scheduler is not None:
            return Health("ok")
        if self._load_error is not None:
            return Health("error", self._load_error)
        if self._loading.locked():
            return Health("loading")
        return Health("unloaded")

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        return await collect_completion(self.generate(request, None))

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return stream_for_client(self.generate(request, None), request.include_usage)

    async def aclose(self) -> None:
        self._closed = True
        await self.unload()

    async def generate(
        self, request: ChatCompletionRequest, adapter: str | None
    ) -> AsyncIterator[ChatCompletionChunk]:
        """The chunk stream of ``request`` on the base model or on ``adapter``."""
        sampling_params(request, {}, None)  # refuse what cannot be served before loading
        if self._scheduler is None:
            await self.load()
        loaded, scheduler = self._loaded, self._scheduler
        if loaded is None or scheduler is None:
            raise BackendUnavailableError(f"model '{self.model}' is not loaded", retry_after=5)
        job = await asyncio.to_thread(plan_generation, request, loaded, self.settings, adapter)
        events = scheduler.stream(job)
        try:
            async for chunk in events_to_chunks(events, ChunkBuilder(model=request.model)):
                yield chunk
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("transformers engine failed for model %s", self.model)
            raise InternalError("the engine failed while generating") from exc


def _torch_threads(settings: TransformersSettings, device: str) -> int | None:
    """CPU threads for torch: the setting, else half the cores on a CPU device (measured on
    2 shared cores: 1 thread beat 2 once the HTTP side needs a core), else torch's default."""
    if settings.torch_threads is not None:
        return settings.torch_threads
    if device != "cpu":
        return None
    import os

    return max(1, (os.cpu_count() or 2) // 2)


class AdapterBackend:
    """A LoRA adapter of a ``TransformersBackend``, served as its own model. Loading loads
    the base (once, shared); unloading and closing are the base's business."""

    kind = KIND

    def __init__(self, base: TransformersBackend, adapter: str) -> None:
        self.model = adapter
        self.base = base

    @property
    def loaded(self) -> bool:
        return self.base.loaded

    async def load(self) -> None:
        await self.base.load()

    async def unload(self) -> None:
        return None

    async def health(self) -> Health:
        return await self.base.health()

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        return await collect_completion(self.base.generate(request, self.model))

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return stream_for_client(self.base.generate(request, self.model), request.include_usage)

    async def aclose(self) -> None:
        return None
