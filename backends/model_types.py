"""Wire types of ``GET /v1/models``: a model's card, what it can do, where it runs, its
download. The OpenAI fields are OpenAI's, and Anthropic's model fields are there too (one
route serves both SDKs); the rest are llmgate extras that clients ignore. A leaf, like
``openai_types``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, computed_field

from backends.wire_base import WireResponse


class ModelCapabilities(WireResponse):
    """What a model can do, discovered from its chat template and engine (or its upstream).
    ``tools``: "native" (the template renders tools), "prompted" (llmgate's documented
    fallback: tools described in the system prompt, calls constrained), "passthrough" (the
    upstream decides), or None (no tool calling). ``tool_parser`` / ``reasoning_parser`` name
    the output formats read."""

    tools: Literal["native", "prompted", "passthrough"] | None = None
    tool_parser: str | None = None
    json_schema: bool = False
    reasoning: bool = False
    reasoning_parser: str | None = None
    context_length: int | None = None


class DownloadProgress(WireResponse):
    """A model's weights being downloaded while it loads: bytes so far, and in all (None: not
    known yet)."""

    source: str
    bytes_done: int
    bytes_total: int | None = None


ModelState = Literal["loaded", "loading", "unloaded", "error"]


class ModelPlacement(WireResponse):
    """Where a loaded in-process model runs, and what its weights are. ``device``: "cpu",
    "gpu" (llama.cpp: every layer offloaded), "gpu+cpu" (some), or a torch device ("cuda:0";
    several: "cuda:0,cuda:1"). ``layers`` / ``gpu_layers``: llama.cpp's offloadable layers
    (blocks plus the output layer) and how many of them run on the GPU. ``parallel``: sequences
    decoded in one batch at most. ``weights_bytes``: the weights in memory; ``gpu_bytes``: how
    much of them is on a GPU (llama.cpp: the offloaded layers' share of its tensors, an
    estimate). ``architecture`` (GGUF's ``general.architecture``, transformers' ``model_type``:
    "llama", "qwen2", "bert"), ``parameters``, ``quantization`` (GGUF's file type, "Q4_1"; else
    the weights' dtype, "BF16") and ``embedding_length`` (the hidden size) are what the Ollama
    surface's ``/api/show`` and ``/api/tags`` report."""

    _omit_if_none = frozenset(
        {
            "layers",
            "gpu_layers",
            "weights_bytes",
            "gpu_bytes",
            "architecture",
            "parameters",
            "quantization",
            "embedding_length",
        }
    )

    device: str
    layers: int | None = None
    gpu_layers: int | None = None
    parallel: int
    weights_bytes: int | None = None
    gpu_bytes: int | None = None
    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    embedding_length: int | None = None


class ModelCard(WireResponse):
    """One entry of ``GET /v1/models``; ``aliases``/``backend``/``loaded``/``state``/``parent``/
    ``task``/``endpoints``/``capabilities``/``placement`` are llmgate extras (OpenAI clients
    ignore unknown keys). ``parent`` names the base model of a LoRA adapter (as vLLM reports
    it)."""

    _omit_if_none = frozenset({"parent", "max_model_len", "load_error"})

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "llmgate"
    aliases: list[str] = Field(default_factory=list)
    backend: str
    loaded: bool
    # loaded, loading, unloaded, or error (the last load failed: load_error says why)
    state: ModelState = "unloaded"
    load_error: str | None = None
    parent: str | None = None
    max_model_len: int | None = None  # the context window, under vLLM's name
    task: Literal["generate", "embed"] = "generate"
    endpoints: list[str] = Field(default_factory=list)  # the routes that serve this model
    capabilities: ModelCapabilities | None = None  # None: not known yet (a model not loaded)
    download: DownloadProgress | None = None  # while its weights download (hf:, modelscope:)
    placement: ModelPlacement | None = None  # an in-process model, while loaded

    # Anthropic's model object, for the anthropic SDK's ``models.list()`` on the same route
    type: Literal["model"] = "model"
    lifecycle: Literal["active"] = "active"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def display_name(self) -> str:
        return self.id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_input_tokens(self) -> int | None:
        return self.max_model_len

    @computed_field  # type: ignore[prop-decorator]
    @property
    def created_at(self) -> str:
        """``created`` as RFC 3339, Anthropic's spelling of it."""
        return datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ModelList(WireResponse):
    """OpenAI's list, which is also Anthropic's page of models (the whole list, one page)."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
    has_more: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def first_id(self) -> str | None:
        return self.data[0].id if self.data else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_id(self) -> str | None:
        return self.data[-1].id if self.data else None
