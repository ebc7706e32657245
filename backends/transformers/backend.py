"""The transformers backend: a Hugging Face model served in-process with continuous batching,
over the shared in-process layer. Each LoRA adapter of the entry is served as its own public
model by an ``AdapterBackend`` (``backends.local.adapter``) over the same base weights;
requests for different adapters share decode steps. An entry with ``task: embed`` is an
embedding model instead (``backends.transformers.embedding``). torch and transformers are
imported only when the model loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from backends.errors import BackendUnavailableError
from backends.local.adapter import AdapterBackend
from backends.local.backend import LocalBackend
from backends.local.embedding import LocalEmbedder
from backends.local.engine import LocalEngine
from backends.protocol import Backend
from backends.transformers.settings import TransformersSettings

if TYPE_CHECKING:
    from backends.transformers.loading import LoadedModel


class TransformersBackend(LocalBackend):
    """See ``LocalBackend``. A first load from a GGUF converts it once
    (``backends.transformers.loading``); ``max_queue`` requests may wait beyond the
    ``max_batch_size`` rows decoding together, more get a 429."""

    kind: ClassVar[str] = "transformers"

    def __init__(self, settings: TransformersSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings
        self._adapters = [AdapterBackend(self, a.name) for a in settings.adapters]

    @property
    def loaded_model(self) -> LoadedModel | None:
        """The model, tokenizer and what was learnt loading them (None until loaded)."""
        loaded: LoadedModel | None = getattr(self.engine, "loaded", None)
        return loaded

    def variants(self) -> list[Backend]:
        """One backend per LoRA adapter, each its own public model over these weights."""
        return list(self._adapters)

    def _load_engine(self) -> LocalEngine:
        try:
            from backends.transformers.engine import TransformersEngine
            from backends.transformers.loading import default_cache_dir, load_model
        except ImportError as exc:
            raise BackendUnavailableError(
                f"model '{self.model}' needs torch and transformers: "
                "pip install 'llmgate[transformers]'"
            ) from exc
        cache_dir = (
            Path(self.settings.cache_dir).expanduser()
            if self.settings.cache_dir
            else default_cache_dir()
        )
        loaded = load_model(self.settings, self._base_dir, cache_dir, self._fetch_weights)
        return TransformersEngine(loaded, self.settings)

    def _load_embedder(self) -> LocalEmbedder:
        try:
            from backends.transformers.embedding import TransformersEmbeddingModel
        except ImportError as exc:
            raise BackendUnavailableError(
                f"model '{self.model}' needs torch and transformers: "
                "pip install 'llmgate[transformers]'"
            ) from exc
        model = TransformersEmbeddingModel.load(self.settings, self._base_dir)
        s = self.settings
        return LocalEmbedder(self.model, model, s.max_batch_size, s.max_queue)
