"""Engines and upstreams behind one protocol (see ``backends.base.Backend``).

``create_backend`` maps a settings object to its backend class, importing the engine module
only then, so that importing ``backends`` never pulls in torch or llama_cpp.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from backends.base import Backend
from backends.settings import BackendSettings

# backend kind -> "module:Class"
_REGISTRY: dict[str, str] = {
    "llama_cpp": "backends.llama_cpp:LlamaCppBackend",
    "transformers": "backends.transformers:TransformersBackend",
    "ollama": "backends.ollama:OllamaBackend",
    "openai": "backends.openai_compat:OpenAICompatBackend",
}


def backend_kinds() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(settings: BackendSettings, base_dir: Path | None = None) -> Backend:
    """Build (not load) the backend for one model entry."""
    module_name, _, class_name = _REGISTRY[settings.backend].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(settings, base_dir=base_dir)
    return backend


__all__ = ["Backend", "backend_kinds", "create_backend"]
