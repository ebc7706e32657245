"""Settings of a Hugging Face model served in-process by transformers (pydantic only)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from backends.settings import AdapterSettings, InProcessSettings, adapter_weight_sources


class TransformersSettings(InProcessSettings):
    """A Hugging Face model served in-process by ``transformers``, batching concurrent requests.
    With ``task: embed``: a sentence-transformers (or plain) model folder, ``max_batch_size``
    texts per forward pass."""

    generate_only = InProcessSettings.generate_only | {
        "chat_template",
        "adapters",
        "prefill_chunk",
        "prefix_cache_tokens",
        "seed",
    }

    backend: Literal["transformers"]
    source: str = Field(
        description="a model folder, a .gguf file (converted once to a cached folder), "
        "package:<pkg>/<file>, or hf:<org>/<repo>[/<file>.gguf]"
    )
    device: str = Field(
        default="auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps"
    )
    device_map: Literal["auto"] | None = Field(
        default=None, description="auto: spread the layers over every visible GPU (accelerate)"
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto: bfloat16 where the device runs it fast, else float32"
    )
    attn_implementation: str | None = Field(
        default=None, description="sdpa | eager | flash_attention_2 ...; default: transformers'"
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for torch; default: half the cores (the HTTP side needs one)",
    )
    trust_remote_code: bool = False
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template for models that ship none"
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="context window; default: the model's own"
    )
    max_batch_size: int = Field(
        default=16,
        ge=1,
        description="sequences decoded together (task embed: texts per forward pass)",
    )
    max_queue: int = Field(default=64, ge=0, description="requests allowed to wait; more: 429")
    prefill_chunk: int = Field(
        default=512,
        ge=1,
        description="prompt tokens per forward pass; a long prompt is read in such slices "
        "between the decode steps of running requests",
    )
    prefix_cache_tokens: int = Field(
        default=8192,
        ge=0,
        description="tokens of KV kept from finished requests, so that a prompt starting with "
        "one of them (the earlier turns of a chat) reads only the rest; least recently used "
        "go first; 0: off. Each token costs 2 x layers x KV heads x head size x dtype bytes "
        "on the model's device (SmolLM2-135M in bf16: 23 KB, an 8B Llama: 128 KB)",
    )
    seed: int | None = Field(default=None, description="default seed for requests without one")
    cache_dir: str | None = Field(
        default=None,
        description="where converted GGUFs are kept; default: $LLMGATE_CACHE_DIR or "
        "~/.cache/llmgate",
    )
    adapters: list[AdapterSettings] = Field(
        default_factory=list, description="peft adapters (a folder, or hf:<org>/<repo>)"
    )

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
        return value

    def weight_sources(self) -> list[tuple[str, str]]:
        return [("source", self.source), *adapter_weight_sources(self.adapters)]

    def public_names(self) -> list[str]:
        return [*super().public_names(), *(a.name for a in self.adapters)]
