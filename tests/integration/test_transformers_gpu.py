"""The transformers engine on CUDA: bf16, continuous batching, LoRA, and ``device_map: auto``.
Skipped only where no CUDA GPU exists (``-m gpu`` selects these)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from backends.openai_types import ChatCompletionRequest
from backends.transformers.backend import TransformersBackend
from backends.transformers.sequences import BatchStats
from backends.transformers.settings import AdapterSettings
from gateway.openai_chat import collect_completion
from gateway.openai_chat_request import to_generation_request
from tests.integration.conftest import SMOLLM2_SOURCE, hf_entry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CAPITAL = "What is the capital of France?"


async def ask(backend: Any, model: str, content: str = CAPITAL, **extra: object) -> str:
    request = ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": content}],
         "temperature": 0, "max_tokens": 16, **extra}
    )  # fmt: skip
    stream = await backend.generate(to_generation_request(request))
    completion = await collect_completion(stream, model)
    assert completion.usage is not None
    return f"{completion.usage.completion_tokens}:{completion.choices[0].message.content}"


def test_smollm2_bf16_on_cuda_answers_and_batches(conversion_cache):
    backend = TransformersBackend(
        hf_entry("gpu-smollm2", SMOLLM2_SOURCE, conversion_cache, device="cuda", dtype="auto")
    )

    async def run() -> None:
        await backend.load()
        loaded = backend.loaded_model
        assert loaded is not None and loaded.device.startswith("cuda")
        assert loaded.dtype == "bfloat16"
        assert "Paris" in await ask(backend, "gpu-smollm2")
        stats = backend.stats
        assert isinstance(stats, BatchStats)
        steps, tokens = stats.decode_steps, stats.tokens_generated
        long = {"max_tokens": 64, "logit_bias": {"0": -100, "2": -100}}
        replies = await asyncio.gather(
            *(ask(backend, "gpu-smollm2", f"Story {i} about the sea.", **long) for i in range(8))
        )
        assert all(r.startswith("64:") for r in replies)
        assert stats.tokens_generated - tokens == 8 * 64
        assert stats.decode_steps - steps < (stats.tokens_generated - tokens) / 4
        await backend.aclose()

    asyncio.run(run())


def test_lora_adapters_share_a_batch_on_cuda(tiny_hf, tiny_loras, conversion_cache):
    adapters = [AdapterSettings(name="gpu-a", source=str(tiny_loras[0]))]
    backend = TransformersBackend(
        hf_entry("gpu-tiny", str(tiny_hf), conversion_cache, device="cuda", dtype="float32",
                 adapters=adapters)
    )  # fmt: skip
    (adapter,) = backend.variants()
    no_eos = {"logit_bias": {"2": -100}}

    async def run() -> None:
        base_solo = await ask(backend, "gpu-tiny", "hi", **no_eos)
        lora_solo = await ask(adapter, "gpu-a", "hi", **no_eos)
        base, lora = await asyncio.gather(
            ask(backend, "gpu-tiny", "hi", **no_eos), ask(adapter, "gpu-a", "hi", **no_eos)
        )
        assert base == base_solo and lora == lora_solo
        assert base_solo != lora_solo
        await backend.aclose()

    asyncio.run(run())


def test_device_map_auto_spreads_over_the_gpus(conversion_cache):
    backend = TransformersBackend(
        hf_entry("gpu-map", SMOLLM2_SOURCE, conversion_cache, device_map="auto", dtype="bfloat16")
    )

    async def run() -> None:
        await backend.load()
        loaded = backend.loaded_model
        assert loaded is not None
        # accelerate records a map when it spreads the layers; on one GPU everything is on it
        spread = set(getattr(loaded.model, "hf_device_map", None) or {})
        devices = {p.device.type for p in loaded.model.parameters()}
        assert devices == {"cuda"}, (spread, devices)
        placement = backend.placement()
        assert placement is not None and placement.device.startswith("cuda"), placement
        assert "Paris" in await ask(backend, "gpu-map")
        await backend.aclose()

    asyncio.run(run())
