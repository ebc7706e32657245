"""What the Ollama surface says about models (``/api/tags``, ``/api/show``, ``/api/ps``,
``/api/version``), built from what llmgate knows (``ModelCard``: backend kind, task, loaded,
capabilities, context window, placement). A model loaded in-process says what its weights say
(``ModelPlacement``): ``size`` and ``size_vram`` (bytes in memory and on a GPU), the family and
``general.architecture`` ("llama"), the parameter count and size ("134.52M", as Ollama writes
it), the quantization ("Q4_1"), ``<arch>.embedding_length``. Otherwise (not loaded yet, or an
upstream's) sizes are 0 and the backend kind stands for the family and architecture.
``<arch>.context_length`` is the window llmgate serves, not the one the model was trained for.
``digest`` is a stable hash of the name. Names are llmgate's public names, without Ollama's
``:latest`` tag (``name:latest`` also resolves).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from backends.model_types import ModelCard
from gateway.ollama_stream import created_at

# The Ollama API version llmgate speaks (clients compare it to enable features).
OLLAMA_VERSION = "0.12.6"

# Weights' file format by backend kind; upstreams do not say.
_FORMATS = {"llama_cpp": "gguf", "transformers": "safetensors"}

# Ollama reports a model kept loaded forever as expiring this far ahead (Go's max Duration).
_FOREVER = dt.timedelta(microseconds=(2**63 - 1) // 1000)


def architecture(card: ModelCard) -> str:
    """The model's architecture when loaded in-process ("llama"), else its backend kind."""
    placement = card.placement
    return (placement.architecture if placement else None) or card.backend


def details(card: ModelCard) -> dict[str, Any]:
    placement = card.placement
    parameters = placement.parameters if placement else None
    family = architecture(card)
    return {
        "parent_model": card.parent or "",
        "format": _FORMATS.get(card.backend, ""),
        "family": family,
        "families": [family],
        "parameter_size": human_number(parameters) if parameters else "",
        "quantization_level": (placement.quantization if placement else None) or "",
    }


def human_number(n: int) -> str:
    """A count as Ollama writes parameter sizes: 134515008 -> "134.52M", 8030261248 -> "8.0B"."""
    for scale, suffix, digits in ((10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 0)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{suffix}" if value.is_integer() else f"{value:.{digits}f}{suffix}"
    return str(n)


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _size(card: ModelCard) -> tuple[int, int]:
    """The weights' bytes and those on a GPU, when the model is loaded in-process (else 0, 0:
    llmgate does not size what it has not loaded, nor what an upstream serves)."""
    placement = card.placement
    if placement is None or placement.weights_bytes is None:
        return 0, 0
    return placement.weights_bytes, placement.gpu_bytes or 0


def _entry(card: ModelCard) -> dict[str, Any]:
    return {
        "name": card.id,
        "model": card.id,
        "modified_at": created_at(card.created * 1_000_000_000),
        "size": _size(card)[0],
        "digest": digest(card.id),
        "details": details(card),
    }


def tags(cards: list[ModelCard]) -> dict[str, Any]:
    """``GET /api/tags``: every model this key may use."""
    return {"models": [_entry(card) for card in cards]}


def ps(
    cards: list[ModelCard],
    expires_in: Callable[[str], float | None] = lambda _name: None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """``GET /api/ps``: the loaded models; ``expires_at`` is when ``expires_in(name)``
    (seconds; None: never, Ollama's "forever") says an idle one will be unloaded."""
    now = now or dt.datetime.now(dt.UTC)

    def expires(name: str) -> str:
        seconds = expires_in(name)
        after = _FOREVER if seconds is None else dt.timedelta(seconds=seconds)
        return (now + after).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return {
        "models": [
            {
                **{k: v for k, v in _entry(card).items() if k != "modified_at"},
                "expires_at": expires(card.id),
                "size_vram": _size(card)[1],
                "context_length": card.max_model_len or 0,
            }
            for card in cards
            if card.loaded
        ]
    }


def capabilities(card: ModelCard) -> list[str]:
    """Ollama's capability names: ``embedding`` for an embedding model; else ``completion``,
    ``tools`` and ``thinking`` as far as llmgate knows now (a model not loaded yet says only
    ``completion``)."""
    if card.task == "embed":
        return ["embedding"]
    found = card.capabilities
    names = ["completion"]
    if found is not None and found.tools is not None:
        names.append("tools")
    if found is not None and found.reasoning:
        names.append("thinking")
    return names


def show(card: ModelCard) -> dict[str, Any]:
    """``POST /api/show``."""
    arch = architecture(card)
    info: dict[str, Any] = {"general.architecture": arch, "general.basename": card.id}
    placement = card.placement
    if placement is not None and placement.parameters:
        info["general.parameter_count"] = placement.parameters
    if card.max_model_len is not None:
        info[f"{arch}.context_length"] = card.max_model_len
    if placement is not None and placement.embedding_length:
        info[f"{arch}.embedding_length"] = placement.embedding_length
    return {
        "license": "",
        "modelfile": f"# llmgate model '{card.id}' ({card.backend} backend); "
        "models are configured in config.yaml\n",
        "parameters": "",
        "template": "",
        "details": details(card),
        "model_info": info,
        "capabilities": capabilities(card),
        "modified_at": created_at(card.created * 1_000_000_000),
    }


def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}
