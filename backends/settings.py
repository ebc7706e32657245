"""Typed settings of one model entry, per backend kind (the ``models:`` items of config.yaml).

Unknown keys are rejected, so a typo stops startup with the key's name. The gateway's config
loader builds these; library users may construct them directly. Pydantic only: importing this
module never imports an engine.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def check_model_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid model name (letters, digits and . _ : / @ + -)")
    return value


class ModelSettings(BaseModel):
    """Keys every model entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: list[str] = Field(default_factory=list)
    preload: bool = Field(
        default=True,
        description="load at server start (true) or on the first request (false)",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="models that serve instead when this one is unavailable or overloaded "
        "before the first byte reached the client",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, values: list[str]) -> list[str]:
        for value in values:
            check_model_name(value)
        return values

    def public_names(self) -> list[str]:
        """Every name a client may send for this entry (and what it derives, e.g. adapters)."""
        return [self.name, *self.aliases]


class LlamaCppSettings(ModelSettings):
    """A GGUF served in-process by llama-cpp-python."""

    backend: Literal["llama_cpp"]
    source: str = Field(
        description="a .gguf path, package:<pkg>/<file>.gguf, or hf:<org>/<repo>/<file>.gguf"
    )
    n_ctx: int = Field(default=2048, ge=16)
    n_gpu_layers: int = Field(default=0, ge=-1, description="-1 = all layers on the GPU")
    n_threads: int | None = Field(
        default=None, ge=1, description="decode threads; default: half the cores"
    )
    n_threads_batch: int | None = Field(
        default=None, ge=1, description="prompt-evaluation threads; default: all the cores"
    )
    n_batch: int = Field(default=512, ge=1)
    flash_attn: bool = False
    chat_format: str | None = Field(
        default=None, description="a llama-cpp-python chat format name; default: the GGUF's"
    )
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template overriding the GGUF's own"
    )
    seed: int | None = Field(default=None, description="default seed for requests without one")
    max_queue: int = Field(default=32, ge=0, description="requests allowed to wait; more: 429")


class AdapterSettings(BaseModel):
    """A peft (LoRA) adapter served as its own public model over its entry's base model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    source: str = Field(description="an adapter folder, or hf:<org>/<repo>")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)


class TransformersSettings(ModelSettings):
    """A Hugging Face model served in-process by ``transformers``, batching concurrent requests."""

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
    max_batch_size: int = Field(default=16, ge=1, description="sequences decoded together")
    max_queue: int = Field(default=64, ge=0, description="requests allowed to wait; more: 429")
    prefill_chunk: int = Field(
        default=512,
        ge=1,
        description="prompt tokens per forward pass; a long prompt is read in such slices "
        "between the decode steps of running requests",
    )
    seed: int | None = Field(default=None, description="default seed for requests without one")
    cache_dir: str | None = Field(
        default=None,
        description="where converted GGUFs are kept; default: $LLMGATE_CACHE_DIR or "
        "~/.cache/llmgate",
    )
    adapters: list[AdapterSettings] = Field(default_factory=list)

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
        return value

    def public_names(self) -> list[str]:
        return [*super().public_names(), *(a.name for a in self.adapters)]


class UpstreamTimeouts(BaseModel):
    """Deadlines for one upstream request, in seconds; each expiry is a 504 (or an error frame
    once streaming has begun)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    connect: float = Field(default=5.0, gt=0, description="TCP connect")
    first_byte: float = Field(
        default=120.0, gt=0, description="request sent -> first chunk (covers queueing/prefill)"
    )
    idle: float = Field(default=60.0, gt=0, description="longest gap between two chunks")
    total: float = Field(default=900.0, gt=0, description="the whole request")


class UpstreamSettings(ModelSettings):
    """Keys shared by the backends that relay to another server."""

    base_url: list[str] = Field(min_length=1, description="one URL, or several replicas")
    upstream_model: str | None = Field(
        default=None, description="the model name the upstream knows; default: `name`"
    )
    api_key: str | None = None
    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)
    max_in_flight: int = Field(
        default=256, ge=1, description="concurrent requests to this model; more: 429"
    )
    max_connections: int = Field(default=100, ge=1, description="pooled connections per replica")
    health_check_interval: float = Field(
        default=10.0, ge=0, description="seconds between active health checks; 0 = off"
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="consecutive failures that put a replica in cool-down"
    )
    cooldown: float = Field(default=30.0, ge=0, description="seconds a failing replica rests")

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        for url in values:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in values]

    @property
    def remote_model(self) -> str:
        return self.upstream_model or self.name


class OllamaSettings(UpstreamSettings):
    """An upstream Ollama server, spoken to over its native /api/chat."""

    backend: Literal["ollama"]
    keep_alive: str | int | None = Field(
        default=None, description="how long Ollama keeps the model loaded (e.g. 5m, -1)"
    )
    num_ctx: int | None = Field(default=None, ge=16, description="Ollama's context window")


class OpenAICompatSettings(UpstreamSettings):
    """Any OpenAI-compatible upstream: vLLM, llama-server, TGI, LM Studio, another llmgate."""

    backend: Literal["openai"]


BackendSettings = LlamaCppSettings | TransformersSettings | OllamaSettings | OpenAICompatSettings
