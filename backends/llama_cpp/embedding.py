"""The llama.cpp embedding primitive: an embedding GGUF loaded with ``embedding=True``; one
pass decodes several sequences together (as many as fit ``n_batch`` tokens and the context's
sequence slots) and reads each sequence's pooled vector. Pooling is the GGUF's own
(``<arch>.pooling_type``: mean, cls, last); vectors are L2-normalised, as llama-server and
Ollama return them. The shared layer (``backends.local.embedding``) batches requests and calls
this on its own thread; llama_cpp is imported when the model loads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from backends.embeddings import Vector, float32_from_bytes
from backends.llama_cpp.engine import layer_placement
from backends.llama_cpp.settings import LlamaCppSettings


class LlamaCppEmbeddingModel:
    """See ``backends.local.embedding.EmbeddingModel``. ``max_sequences``: the most texts one
    pass can hold (the context's sequence slots)."""

    def __init__(self, llm: Any, n_gpu_layers: int = 0) -> None:
        import llama_cpp

        pooling = llm.pooling_type()
        if pooling in (llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_RANK):
            llm.close()
            raise ValueError(
                "the GGUF does not pool its token states into one vector (pooling type "
                f"{pooling}); an embedding GGUF has <arch>.pooling_type mean, cls or last"
            )
        self._llm = llm
        self.max_tokens = min(llm.n_ctx(), llm.n_batch, llm._model.n_ctx_train())
        self.dimensions = int(llm.n_embd())
        self.vocab_size = int(llm.n_vocab())
        self.max_sequences = int(llm.context_params.n_seq_max)
        self.placement = layer_placement(llm.model, n_gpu_layers, self.max_sequences)

    @classmethod
    def load(cls, path: Path, settings: LlamaCppSettings) -> LlamaCppEmbeddingModel:
        from llama_cpp import Llama

        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "embedding": True,
            "n_ctx": settings.n_ctx,
            "n_batch": settings.n_batch,
            # an encoder (BERT) reads each sequence whole, in one micro-batch
            "n_ubatch": settings.n_batch,
            "n_gpu_layers": settings.n_gpu_layers,
            "verbose": False,
        }
        if settings.n_threads is not None:
            kwargs["n_threads"] = settings.n_threads
        if settings.n_threads_batch is not None:
            kwargs["n_threads_batch"] = settings.n_threads_batch
        if settings.flash_attn:
            kwargs["flash_attn"] = True
        return cls(Llama(**kwargs), settings.n_gpu_layers)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        # add_bos: the vocabulary's own special tokens ([CLS] ... [SEP] for BERT)
        return [list(self._llm.tokenize(t.encode("utf-8"), add_bos=True)) for t in texts]

    def start(self) -> None:
        return None

    def embed_batch(self, batch: list[list[int]]) -> list[Vector]:
        out: list[Vector] = []
        while len(out) < len(batch):
            out += self._decode(batch[len(out) :])
        return out

    def _decode(self, batch: list[list[int]]) -> list[Vector]:
        """The vectors of the first sequences of ``batch`` that fit one decode (at least one:
        every input is at most ``max_tokens`` long)."""
        import llama_cpp
        import numpy as np

        llm = self._llm
        llm._batch.reset()
        taken = tokens = 0
        for ids in batch:
            if taken == self.max_sequences or tokens + len(ids) > llm.n_batch:
                break
            llm._batch.add_sequence(ids, taken, True)
            taken, tokens = taken + 1, tokens + len(ids)
        llm._ctx.kv_cache_clear()
        llm._ctx.decode(llm._batch)
        vectors = []
        for seq in range(taken):
            pointer = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)
            row = np.ctypeslib.as_array(pointer, shape=(self.dimensions,)).astype(np.float32)
            norm = float(np.sqrt(np.dot(row, row)))
            if norm > 0 and math.isfinite(norm):
                row = row / norm
            vectors.append(float32_from_bytes(row.tobytes()))
        return vectors

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
