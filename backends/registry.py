"""The one table of backend kinds: each kind's settings class and backend class.

Config validation (``gateway.config``) reads ``settings_class``; construction reads
``create_backend``. Backend classes are named as ``"module:Class"`` and imported only when a
model of that kind is built, so importing this never pulls in torch or llama_cpp. Adding a
backend kind is one row here plus its package (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from backends.llama_cpp.settings import LlamaCppSettings
from backends.protocol import Backend
from backends.settings import ModelSettings
from backends.transformers.settings import TransformersSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings


@dataclass(frozen=True)
class BackendKind:
    settings: type[ModelSettings]
    backend: str  # "module:Class", imported on first use


KINDS: dict[str, BackendKind] = {
    "llama_cpp": BackendKind(LlamaCppSettings, "backends.llama_cpp.backend:LlamaCppBackend"),
    "transformers": BackendKind(
        TransformersSettings, "backends.transformers.backend:TransformersBackend"
    ),
    "ollama": BackendKind(OllamaSettings, "backends.upstream.ollama:OllamaBackend"),
    "openai": BackendKind(
        OpenAICompatSettings, "backends.upstream.openai_compat:OpenAICompatBackend"
    ),
}

# The settings of any one model entry (a pydantic union, discriminated by ``backend``).
BackendSettings = LlamaCppSettings | TransformersSettings | OllamaSettings | OpenAICompatSettings


def backend_kinds() -> list[str]:
    return sorted(KINDS)


def settings_class(kind: str) -> type[ModelSettings] | None:
    entry = KINDS.get(kind)
    return entry.settings if entry is not None else None


def create_backend(settings: ModelSettings, base_dir: Path | None = None) -> Backend:
    """Build (not load) the backend for one model entry."""
    kind = getattr(settings, "backend", None)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown backend kind {kind!r}; expected one of {backend_kinds()}")
    module_name, _, class_name = KINDS[kind].backend.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(settings, base_dir=base_dir)
    return backend
