"""What an upstream says its model can do (``HasCapabilities``), read from the upstream's own
metadata: Ollama's ``POST /api/show``, an OpenAI-compatible server's ``GET /models`` entry.
Pure functions over the parsed replies; ``UpstreamBackend.capabilities`` asks and caches.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from backends.model_types import ModelCapabilities


def ollama_capabilities(show: Any, num_ctx: int | None = None) -> ModelCapabilities | None:
    """From an ``/api/show`` reply: its ``capabilities`` list ("tools": native tool calling,
    "thinking": reasoning) and ``model_info["<arch>.context_length"]`` — or ``num_ctx`` when
    the model entry sets a smaller window, since that is the one requests get. ``format``
    takes any JSON schema, so ``json_schema`` holds. None for a reply that is not one."""
    if not isinstance(show, dict):
        return None
    listed = show.get("capabilities")
    capabilities = {str(c) for c in listed} if isinstance(listed, list) else set()
    info = show.get("model_info")
    trained: int | None = None
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        trained = _positive_int(info.get(f"{arch}.context_length"))
    windows = [w for w in (trained, num_ctx) if w is not None]
    return ModelCapabilities(
        tools="native" if "tools" in capabilities else None,
        json_schema=True,
        reasoning="thinking" in capabilities,
        context_length=min(windows) if windows else None,
    )


def openai_capabilities(models: Any, remote_model: str) -> ModelCapabilities | None:
    """From a ``/models`` reply, the entry of ``remote_model``: its context window under
    vLLM's name (``max_model_len``) or another server's (``context_length``,
    ``context_window``). Tools and ``response_format`` pass through to the upstream, which
    decides. An upstream llmgate's own ``capabilities`` are kept (its tools then pass through
    too). None when the reply does not list the model."""
    data = models.get("data") if isinstance(models, dict) else None
    entry = next(
        (m for m in data or [] if isinstance(m, dict) and m.get("id") == remote_model), None
    )
    if entry is None:
        return None
    context = next(
        (
            value
            for key in ("max_model_len", "context_length", "context_window")
            if (value := _positive_int(entry.get(key))) is not None
        ),
        None,
    )
    reported = _reported(entry.get("capabilities"))
    if reported is not None:
        return reported.model_copy(
            update={
                "tools": "passthrough" if reported.tools else None,
                "context_length": reported.context_length or context,
            }
        )
    return ModelCapabilities(tools="passthrough", json_schema=True, context_length=context)


def _reported(value: Any) -> ModelCapabilities | None:
    if not isinstance(value, dict):
        return None
    try:
        return ModelCapabilities.model_validate(value)
    except ValidationError:
        return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value > 0 else None
