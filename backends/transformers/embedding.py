"""The transformers embedding primitive: a sentence-transformers (or plain Hugging Face) model
folder loaded with ``AutoModel``, one right-padded forward pass per batch, pooled and
normalised as the folder's configuration says (``backends.transformers.pooling``). The shared
layer (``backends.local.embedding``) batches requests and calls it on its own thread.
Imports torch; sentence-transformers is never imported.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from backends.embeddings import Vector, float32_from_bytes
from backends.errors import BackendUnavailableError
from backends.transformers.engine import _torch_threads as torch_threads
from backends.transformers.engine import model_placement
from backends.transformers.loading import load_pretrained, resolve_device, resolve_dtype
from backends.transformers.pooling import PoolingConfig, PoolingConfigError, pool
from backends.transformers.pooling import read_pooling_config as read_pooling
from backends.transformers.settings import TransformersSettings
from backends.weight_sources import resolve_source


class TransformersEmbeddingModel:
    """See ``backends.local.embedding.EmbeddingModel``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pooling: PoolingConfig,
        device: str,
        max_tokens: int,
        torch_threads: int | None,
        parallel: int,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.pooling = pooling
        self.device = device
        self.max_tokens = max_tokens
        self.dimensions = int(model.config.hidden_size)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self._pad_id = int(tokenizer.pad_token_id or 0)
        self._torch_threads = torch_threads
        self.placement = model_placement(model, parallel)

    @classmethod
    def load(
        cls, settings: TransformersSettings, base_dir: Path | None
    ) -> TransformersEmbeddingModel:
        """Raises ``BackendUnavailableError`` naming the model for every failure."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        path = resolve_source(settings.name, settings.source, base_dir)
        if not path.is_dir():
            raise BackendUnavailableError(
                f"model '{settings.name}': an embedding model for transformers is a model "
                f"folder (config.json, weights, tokenizer); {path} is not one"
            )
        try:
            pooling = read_pooling(path)
            tokenizer, model = load_pretrained(
                settings, path, device, dtype, auto_class="AutoModel"
            )
        except (PoolingConfigError, OSError, ValueError) as exc:
            raise BackendUnavailableError(
                f"model '{settings.name}' failed to load from {path}: {exc}"
            ) from exc
        limit = pooling.max_seq_length or _model_limit(model, tokenizer)
        max_tokens = min(settings.max_model_len, limit) if settings.max_model_len else limit
        threads = torch_threads(settings, device)
        return cls(model, tokenizer, pooling, device, max_tokens, threads, settings.max_batch_size)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.pooling.do_lower_case:
            texts = [text.lower() for text in texts]
        encoded = self._tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [list(ids) for ids in encoded]

    def start(self) -> None:
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)

    def embed_batch(self, batch: list[list[int]]) -> list[Vector]:
        import torch

        width = max(len(ids) for ids in batch)
        ids = torch.tensor([row + [self._pad_id] * (width - len(row)) for row in batch])
        lengths = torch.tensor([len(row) for row in batch])
        mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
        ids, mask, lengths = ids.to(self.device), mask.to(self.device), lengths.to(self.device)
        with torch.inference_mode():
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            vectors = pool(hidden, mask, lengths, self.pooling.mode).float()
            if self.pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return [float32_from_bytes(row.tobytes()) for row in vectors.cpu().numpy()]

    def close(self) -> None:
        self._model = None
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _model_limit(model: Any, tokenizer: Any) -> int:
    """The longest input without a sentence-transformers limit: the tokenizer's, capped by the
    model's position embeddings (tokenizers without one say 10**30)."""
    positions = int(getattr(model.config, "max_position_embeddings", None) or 512)
    declared = getattr(tokenizer, "model_max_length", None)
    return min(positions, int(declared)) if isinstance(declared, int) else positions
