"""The transformers engine on CUDA: bf16, continuous batching, LoRA, and ``device_map: auto``.
Skipped only where no CUDA GPU exists (``-m gpu`` selects these)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from backends.openai_types import ChatCompletionRequest
from backends.transformers.backend import TransformersBackend
from backends.transformers.settings import AdapterSettings
from tests.integration.conftest import SMOLLM2_SOURCE, hf_entry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CAPITAL = "Name the capital city of France in one word."


def ask(model: str, content: str = CAPITAL, **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": content}],
         "temperature": 0, "max_tokens": 16, **extra}
    )  # fmt: skip


def test_smollm2_bf16_on_cuda_answers_and_batches(conversion_cache):
    backend = TransformersBackend(
        hf_entry("gpu-smollm2", SMOLLM2_SOURCE, conversion_cache, device="cuda", dtype="auto")
    )

    async def run() -> None:
        await backend.load()
        loaded = backend.loaded_model
        assert loaded is not None and loaded.device == "cuda" and loaded.dtype == "bfloat16"
        reply = await backend.chat(ask("gpu-smollm2"))
        assert "Paris" in (reply.choices[0].message.content or "")
        stats = backend.stats
        assert stats is not None
        passes, tokens = stats.forward_passes, stats.tokens_generated
        long = {"max_tokens": 64, "logit_bias": {"0": -100, "2": -100}}
        replies = await asyncio.gather(
            *(
                backend.chat(ask("gpu-smollm2", f"Story {i} about the sea.", **long))
                for i in range(8)
            )
        )
        assert all(r.usage.completion_tokens == 64 for r in replies)
        assert stats.forward_passes - passes < (stats.tokens_generated - tokens) / 4
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
        base_solo = await backend.chat(ask("gpu-tiny", "hi", **no_eos))
        lora_solo = await adapter.chat(ask("gpu-a", "hi", **no_eos))
        base, lora = await asyncio.gather(
            backend.chat(ask("gpu-tiny", "hi", **no_eos)),
            adapter.chat(ask("gpu-a", "hi", **no_eos)),
        )
        assert base.choices[0].message.content == base_solo.choices[0].message.content
        assert lora.choices[0].message.content == lora_solo.choices[0].message.content
        assert base_solo.choices[0].message.content != lora_solo.choices[0].message.content
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
        placement = set(getattr(loaded.model, "hf_device_map", {}).values())
        assert placement and all(str(p).isdigit() or str(p).startswith("cuda") for p in placement)
        reply = await backend.chat(ask("gpu-map"))
        assert "Paris" in (reply.choices[0].message.content or "")
        await backend.aclose()

    asyncio.run(run())
