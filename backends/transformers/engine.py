"""The transformers engine: a loaded Hugging Face model and its continuous-batching scheduler
(``backends.transformers.scheduler``), behind the in-process engine seam. Imports torch."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from backends.events import Event
from backends.local.grammar import GrammarVocabulary
from backends.local.plan import EngineLimits, GenerationPlan
from backends.model_types import ModelPlacement
from backends.transformers.loading import LoadedModel
from backends.transformers.scheduler import BatchScheduler
from backends.transformers.sequences import BatchStats
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
            prefix_cache_tokens=settings.prefix_cache_tokens,
        )
        self.placement = model_placement(loaded.model, settings.max_batch_size)
        self.limits = EngineLimits(
            context_window=loaded.max_context,
            vocab_size=loaded.vocab_size,
            sampling_defaults=loaded.sampling_defaults,
            default_seed=settings.seed,
            max_n=settings.max_batch_size,
        )
        # llguidance reads every added token as special (so does the grammar's ``lit``)
        self._specials = {
            str(token.content): int(token_id)
            for token_id, token in loaded.tokenizer.added_tokens_decoder.items()
        }
        self._grammar = GrammarVocabulary(self._build_grammar_tokenizer)
        self._scheduler.start()

    @property
    def stats(self) -> BatchStats:
        return self._scheduler.stats

    @property
    def waiting(self) -> int:
        return self._scheduler.waiting

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.loaded.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **options: Any
    ) -> tuple[str, bool]:
        text = self.loaded.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False, **options
        )
        return str(text), False  # the template writes its own BOS

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        ids = self.loaded.tokenizer(text, add_special_tokens=add_bos)["input_ids"]
        return [int(t) for t in ids]

    @property
    def special_tokens(self) -> Mapping[str, int]:
        return self._specials

    def grammar_tokenizer(self) -> Any:
        return self._grammar.get()

    def _build_grammar_tokenizer(self) -> Any:
        from llguidance.hf import from_tokenizer

        eos = sorted(self.loaded.eos_token_ids)
        return from_tokenizer(
            self.loaded.tokenizer, n_vocab=self.limits.vocab_size, eos_token=eos or None
        )

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]:
        return self._scheduler.stream(plan)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._scheduler.close)


def model_devices(model: Any) -> str:
    """Where ``model``'s weights are: its device ("cpu", "cuda:0"), or with ``device_map`` every
    device its layers were spread over ("cuda:0,cuda:1")."""
    device_map = getattr(model, "hf_device_map", None) or {}
    spread = {f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()}
    if spread:
        return ",".join(sorted(spread))
    return str(getattr(model, "device", "cpu"))


def model_placement(model: Any, parallel: int) -> ModelPlacement:
    """Where ``model``'s weights are, their size, and what they are (see ``ModelPlacement``)."""
    weights, on_gpu = weight_bytes(model)
    config = model.config
    quantization = str(model.dtype).removeprefix("torch.").upper().replace("FLOAT", "F")
    quantized = getattr(config, "quantization_config", None)  # bitsandbytes, GPTQ, AWQ...
    if quantized is not None:
        method = (
            quantized.get("quant_method")
            if isinstance(quantized, dict)
            else getattr(quantized, "quant_method", None)
        )
        quantization = str(getattr(method, "value", method) or "quantized").upper()
    hidden = getattr(config, "hidden_size", None)
    return ModelPlacement(
        device=model_devices(model),
        parallel=parallel,
        weights_bytes=weights,
        gpu_bytes=on_gpu,
        architecture=getattr(config, "model_type", None) or None,
        parameters=int(sum(p.numel() for p in model.parameters())),
        quantization=quantization,
        embedding_length=int(hidden) if isinstance(hidden, int) else None,
    )


def weight_bytes(model: Any) -> tuple[int, int]:
    """Bytes of ``model``'s parameters and buffers in memory, and of those on an accelerator
    (anything but the CPU; weights offloaded to disk sit on the ``meta`` device: neither)."""
    total = on_gpu = 0
    for tensor in (*model.parameters(), *model.buffers()):
        kind = tensor.device.type
        if kind == "meta":
            continue
        size = tensor.numel() * tensor.element_size()
        total += size
        if kind != "cpu":
            on_gpu += size
    return total, on_gpu


def _torch_threads(settings: TransformersSettings, device: str) -> int | None:
    """CPU threads for torch: the setting, else half the cores on a CPU device (measured on
    2 shared cores: 1 thread beat 2 once the HTTP side needs a core), else torch's default."""
    if settings.torch_threads is not None:
        return settings.torch_threads
    if device != "cpu":
        return None
    return max(1, (os.cpu_count() or 2) // 2)
