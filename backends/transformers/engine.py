"""The transformers engine: a loaded Hugging Face model and its continuous-batching scheduler
(``backends.transformers.scheduler``), behind the in-process engine seam. Imports torch."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from backends.errors import UnsupportedParameterError
from backends.events import Event
from backends.local.plan import (
    EngineLimits,
    GenerationPlan,
    template_messages,
    template_rejected,
)
from backends.requests import GenerationRequest, OutputConstraint
from backends.transformers.loading import LoadedModel
from backends.transformers.scheduler import BatchScheduler, BatchStats
from backends.transformers.settings import TransformersSettings


class TransformersEngine:
    """See ``backends.local.engine.LocalEngine``. ``loaded`` is the model, tokenizer and what
    was learnt while loading them."""

    def __init__(self, loaded: LoadedModel, settings: TransformersSettings) -> None:
        self.loaded = loaded
        self._name = settings.name
        self._scheduler = BatchScheduler(
            loaded,
            name=settings.name,
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            torch_threads=_torch_threads(settings, loaded.device),
            prefill_chunk=settings.prefill_chunk,
        )
        self.limits = EngineLimits(
            context_window=loaded.max_context,
            vocab_size=loaded.vocab_size,
            sampling_defaults=loaded.sampling_defaults,
            default_seed=settings.seed,
            max_n=settings.max_batch_size,
        )
        self._scheduler.start()

    @property
    def stats(self) -> BatchStats:
        return self._scheduler.stats

    @property
    def waiting(self) -> int:
        return self._scheduler.waiting

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        tokenizer = self.loaded.tokenizer
        if request.prompt is not None:
            return [int(t) for t in tokenizer(request.prompt)["input_ids"]]
        try:
            prompt = tokenizer.apply_chat_template(
                template_messages(request),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        except Exception as exc:  # jinja errors, raise_exception() in templates
            raise template_rejected(request.model, exc) from exc
        return [int(t) for t in prompt]

    def compile_constraint(self, constraint: OutputConstraint) -> Any:
        raise UnsupportedParameterError(
            f"model '{self._name}' (transformers backend) cannot constrain output",
            param="response_format",
        )

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]:
        return self._scheduler.stream(plan)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._scheduler.close)


def _torch_threads(settings: TransformersSettings, device: str) -> int | None:
    """CPU threads for torch: the setting, else half the cores on a CPU device (measured on
    2 shared cores: 1 thread beat 2 once the HTTP side needs a core), else torch's default."""
    if settings.torch_threads is not None:
        return settings.torch_threads
    if device != "cpu":
        return None
    return max(1, (os.cpu_count() or 2) // 2)
