"""The llama.cpp backend: a GGUF served in-process by llama-cpp-python, one request at a time
per model (``backends.llama_cpp.engine``), over the shared in-process layer. Each GGUF LoRA
adapter of the entry is served as its own public model by an ``AdapterBackend``
(``backends.local.adapter``) over the same weights. An entry with ``task: embed`` serves an
embedding GGUF instead (``backends.llama_cpp.embedding``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from backends.errors import BackendUnavailableError
from backends.llama_cpp.adapters import LoraFile
from backends.llama_cpp.embedding import LlamaCppEmbeddingModel
from backends.llama_cpp.engine import LlamaCppEngine
from backends.llama_cpp.settings import LlamaCppSettings
from backends.local.adapter import AdapterBackend
from backends.local.backend import LocalBackend
from backends.local.embedding import LocalEmbedder
from backends.protocol import Backend


class LlamaCppBackend(LocalBackend):
    """See ``LocalBackend``; a full wait queue (``max_queue``) is a 429. An adapter llama.cpp
    cannot load fails the model's load (503 naming the adapter)."""

    kind: ClassVar[str] = "llama_cpp"

    def __init__(self, settings: LlamaCppSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings
        self._adapters = [AdapterBackend(self, a.name) for a in settings.adapters]

    def variants(self) -> list[Backend]:
        """One backend per LoRA adapter, each its own public model over these weights."""
        return list(self._adapters)

    def _load_engine(self) -> LlamaCppEngine:
        path = self._fetch_weights(self.settings.source)
        loras = [
            LoraFile(a.name, self._fetch_weights(a.source), a.scale) for a in self.settings.adapters
        ]
        return LlamaCppEngine.load(path, self.settings, loras)

    def _load_embedder(self) -> LocalEmbedder:
        path = self._fetch_weights(self.settings.source)
        try:
            model = LlamaCppEmbeddingModel.load(path, self.settings)
        except ValueError as exc:
            raise BackendUnavailableError(f"model '{self.model}' ({path}): {exc}") from exc
        return LocalEmbedder(self.model, model, model.max_sequences, self.settings.max_queue)
