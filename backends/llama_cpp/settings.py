"""Settings of a GGUF model served in-process by llama-cpp-python (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backends.settings import AdapterSettings, InProcessSettings, adapter_weight_sources


class LlamaCppAdapterSettings(AdapterSettings):
    """A GGUF LoRA adapter (``convert_lora_to_gguf.py``'s output) of a llama.cpp entry."""

    source: str = Field(
        description="a LoRA .gguf path, package:<pkg>/<file>.gguf, or hf:<org>/<repo>/<file>.gguf"
    )
    scale: float = Field(
        default=1.0, gt=0, description="how strongly the adapter applies (times its alpha/rank)"
    )


class LlamaCppSettings(InProcessSettings):
    """A GGUF served in-process by llama-cpp-python. With ``task: embed``: an embedding GGUF,
    as many texts per pass as fit ``n_batch`` tokens."""

    generate_only = InProcessSettings.generate_only | {
        "adapters",
        "chat_format",
        "chat_template",
        "parallel",
        "seed",
    }

    backend: Literal["llama_cpp"]
    source: str = Field(
        description="a .gguf path, package:<pkg>/<file>.gguf, or hf:<org>/<repo>/<file>.gguf"
    )
    n_ctx: int = Field(
        default=2048, ge=16, description="each sequence's context window (prompt + answer)"
    )
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="sequences decoded together in one batch (continuous batching; the KV "
        "cache holds n_ctx x parallel tokens); default: 4, fewer for a large n_ctx or one core",
    )
    n_gpu_layers: int = Field(default=0, ge=-1, description="-1 = all layers on the GPU")
    n_threads: int | None = Field(
        default=None, ge=1, description="decode threads; default: half the cores"
    )
    n_threads_batch: int | None = Field(
        default=None, ge=1, description="prompt-evaluation threads; default: all the cores"
    )
    n_batch: int = Field(default=512, ge=1)
    flash_attn: bool | None = Field(
        default=False,
        description="flash attention; null: llama.cpp decides (on for CPUs, as llama-server's "
        "-fa auto). Off by default: faster with several sequences, but it changed SmolLM2's "
        "greedy answers for the worse here",
    )
    chat_format: str | None = Field(
        default=None, description="a llama-cpp-python chat format name; default: the GGUF's"
    )
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template overriding the GGUF's own"
    )
    seed: int | None = Field(default=None, description="default seed for requests without one")
    max_queue: int = Field(
        default=32, ge=0, description="requests allowed to wait for a free sequence; more: 429"
    )
    adapters: list[LlamaCppAdapterSettings] = Field(
        default_factory=list,
        description="LoRA adapters, each served as its own model over these weights",
    )

    def weight_sources(self) -> list[tuple[str, str]]:
        return [("source", self.source), *adapter_weight_sources(self.adapters)]

    def public_names(self) -> list[str]:
        return [*super().public_names(), *(a.name for a in self.adapters)]
