"""The llama.cpp backend: a GGUF served in-process by llama-cpp-python, one request at a time
per model (``backends.llama_cpp.engine``), over the shared in-process layer. An entry with
``task: embed`` serves an embedding GGUF instead (``backends.llama_cpp.embedding``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from backends.errors import BackendUnavailableError
from backends.llama_cpp.embedding import LlamaCppEmbeddingModel
from backends.llama_cpp.engine import LlamaCppEngine
from backends.llama_cpp.settings import LlamaCppSettings
from backends.local.backend import LocalBackend
from backends.local.embedding import LocalEmbedder


class LlamaCppBackend(LocalBackend):
    """See ``LocalBackend``; a full wait queue (``max_queue``) is a 429."""

    kind: ClassVar[str] = "llama_cpp"

    def __init__(self, settings: LlamaCppSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings

    def _load_engine(self) -> LlamaCppEngine:
        path = self._fetch_weights(self.settings.source)
        return LlamaCppEngine.load(path, self.settings)

    def _load_embedder(self) -> LocalEmbedder:
        path = self._fetch_weights(self.settings.source)
        try:
            model = LlamaCppEmbeddingModel.load(path, self.settings)
        except ValueError as exc:
            raise BackendUnavailableError(f"model '{self.model}' ({path}): {exc}") from exc
        return LocalEmbedder(self.model, model, model.max_sequences, self.settings.max_queue)
