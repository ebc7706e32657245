"""Embeddings in-process, written once for both engines.

``LocalEmbedder.embed`` checks a request (``dimensions``, lengths, token ids) and tokenizes its
texts in a worker thread, then hands the token lists to the ``EmbeddingBatcher``. The batcher
owns one thread per model: each round it takes every text waiting (from every request that
arrived meanwhile, up to ``_ROUND_PASSES`` passes' worth), sorts them by length as
sentence-transformers does (so that a pass pads little), runs forward passes of at most
``max_batch_size`` texts, and hands each request its vectors, in order, once all are done.
Nothing waits for a timer: a lone request starts at once; requests arriving while a pass runs
share the next one. An engine supplies only its primitive, an ``EmbeddingModel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from backends.embeddings import EmbeddingInput, EmbeddingRequest, EmbeddingResult, Vector
from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    QueueFullError,
    UnsupportedParameterError,
)
from backends.model_types import ModelPlacement

log = logging.getLogger(__name__)

# A round takes at most this many passes' worth of waiting texts, so that later arrivals wait
# for at most one round.
_ROUND_PASSES = 8


class EmbeddingModel(Protocol):
    """A loaded embedding model, as the shared layer sees it.

    - ``max_tokens`` (the longest input it reads, special tokens included), ``dimensions``,
      ``vocab_size`` and ``placement`` (where its weights are, and their size) are fixed once
      loaded.
    - ``tokenize`` (texts -> token ids with the model's special tokens) may be called from any
      worker thread: it only reads the vocabulary.
    - ``start``, ``embed_batch`` and ``close`` are called on the batcher's thread only:
      ``start`` once before the first pass (thread settings), ``embed_batch`` for one forward
      pass (one float32 vector per token list, pooled and normalised as the model's
      configuration says), ``close`` once after the last (frees the model).
    """

    max_tokens: int
    dimensions: int
    vocab_size: int
    placement: ModelPlacement

    def tokenize(self, texts: list[str]) -> list[list[int]]: ...

    def start(self) -> None: ...

    def embed_batch(self, batch: list[list[int]]) -> list[Vector]: ...

    def close(self) -> None: ...


@dataclass
class EmbeddingStats:
    """Counters written by the batcher's thread (read by tests and benchmarks)."""

    requests: int = 0
    texts: int = 0
    passes: int = 0
    largest_pass: int = 0


class _Job:
    """One request's token lists and the vectors found so far; resolved on its loop."""

    def __init__(self, inputs: list[list[int]]) -> None:
        self.inputs = inputs
        self.vectors: list[Vector | None] = [None] * len(inputs)
        self.left = len(inputs)
        self.done = False  # failed, cancelled or resolved: its other texts are skipped
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[list[Vector]] = self.loop.create_future()

    def deliver(self, index: int, vector: Vector) -> None:
        self.vectors[index] = vector
        self.left -= 1
        if self.left == 0 and not self.done:
            self.done = True
            self._post(self.future.set_result, [v for v in self.vectors if v is not None])

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self._post(self.future.set_exception, error)

    def _post(self, settle: Callable[[Any], None], value: object) -> None:
        def apply() -> None:
            if not self.future.done():
                settle(value)

        # RuntimeError: the loop closed under us (shutdown): nobody is waiting
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(apply)


class EmbeddingBatcher:
    """See the module docstring. ``embed`` raises ``QueueFullError`` when ``max_queue``
    requests already wait, ``BackendUnavailableError`` once closed (requests still waiting
    then get it too, retryable); a pass that fails fails the requests in it (``InternalError``
    unless the engine raised a ``GatewayError``). ``close`` is idempotent and joins the
    thread after the running pass."""

    def __init__(
        self, name: str, model: EmbeddingModel, max_batch_size: int, max_queue: int
    ) -> None:
        self._name = name
        self._model = model
        self._max_batch = max_batch_size
        self._max_queue = max_queue
        self._pending: deque[tuple[_Job, int]] = deque()
        self._jobs_waiting = 0
        self._changed = threading.Condition()
        self._closed = False
        self.stats = EmbeddingStats()
        self._thread = threading.Thread(target=self._run, name=f"embed-{name}", daemon=True)
        self._thread.start()

    async def embed(self, inputs: list[list[int]]) -> list[Vector]:
        """One vector per token list, in order."""
        job = _Job(inputs)
        with self._changed:
            if self._closed:
                raise BackendUnavailableError(f"model '{self._name}' was unloaded", retry_after=5)
            if self._jobs_waiting > self._max_queue:
                raise QueueFullError(
                    f"model '{self._name}' is busy: {self._jobs_waiting} requests already wait "
                    f"(max_queue={self._max_queue}); retry later",
                    retry_after=1,
                )
            self._jobs_waiting += 1
            self._pending.extend((job, index) for index in range(len(inputs)))
            self._changed.notify()
        try:
            return await job.future
        finally:
            job.done = True  # cancelled: its texts still waiting are skipped

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            self._model.start()
            while (round_ := self._next_round()) is not None:
                for start in range(0, len(round_), self._max_batch):
                    self._pass(round_[start : start + self._max_batch])
        finally:
            self._fail_waiting()
            self._model.close()

    def _next_round(self) -> list[tuple[_Job, int]] | None:
        """The texts waiting, longest first (None once closed)."""
        taken: list[tuple[_Job, int]] = []
        limit = self._max_batch * _ROUND_PASSES
        with self._changed:
            while not taken:
                if self._closed:
                    return None
                if not self._pending:
                    self._changed.wait()
                    continue
                while self._pending and len(taken) < limit:
                    job, index = self._pending.popleft()
                    if index == len(job.inputs) - 1:
                        self._jobs_waiting -= 1  # all its texts are taken: it no longer waits
                    if not job.done:
                        taken.append((job, index))
        taken.sort(key=lambda item: -len(item[0].inputs[item[1]]))
        return taken

    def _pass(self, items: list[tuple[_Job, int]]) -> None:
        items = [item for item in items if not item[0].done]
        if not items:
            return
        try:
            vectors = self._model.embed_batch([job.inputs[index] for job, index in items])
        except Exception as exc:
            error = exc if isinstance(exc, GatewayError) else None
            if error is None:
                log.exception("embedding model %s failed in a forward pass", self._name)
            for job, _ in items:
                job.fail(error or _internal(exc))
            return
        stats = self.stats
        stats.passes += 1
        stats.texts += len(items)
        stats.largest_pass = max(stats.largest_pass, len(items))
        for (job, index), vector in zip(items, vectors, strict=True):
            job.deliver(index, vector)
            if job.left == 0:
                stats.requests += 1

    def _fail_waiting(self) -> None:
        with self._changed:
            self._closed = True
            pending, self._pending = self._pending, deque()
        for job, _ in pending:
            job.fail(BackendUnavailableError(f"model '{self._name}' was unloaded", retry_after=5))


def _internal(exc: Exception) -> InternalError:
    error = InternalError("the engine failed while embedding")
    error.__cause__ = exc
    return error


class LocalEmbedder:
    """An embedding model served in-process: a request's checks and tokens, then the
    batcher. ``embed`` raises what ``backends.protocol.Embedder`` says."""

    def __init__(
        self, name: str, model: EmbeddingModel, max_batch_size: int, max_queue: int
    ) -> None:
        self.name = name
        self.model = model
        self.batcher = EmbeddingBatcher(name, model, max_batch_size, max_queue)

    @property
    def stats(self) -> EmbeddingStats:
        return self.batcher.stats

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        check_dimensions(request.dimensions, self.model.dimensions, self.name)
        tokens = await asyncio.to_thread(self.tokens, request.inputs, request.truncate)
        vectors = await self.batcher.embed(tokens)
        return EmbeddingResult(tuple(vectors), sum(len(t) for t in tokens))

    def tokens(self, inputs: Sequence[EmbeddingInput], truncate: bool = False) -> list[list[int]]:
        """Each input's token ids (texts tokenized in one call), checked against the model;
        with ``truncate``, a text longer than the model reads is cut to fit first."""
        texts = [text for text in inputs if isinstance(text, str)]
        tokenized = iter(self.model.tokenize(texts) if texts else [])
        out = [next(tokenized) if isinstance(item, str) else list(item) for item in inputs]
        for index, ids in enumerate(out):
            if truncate and isinstance(inputs[index], str):
                ids = out[index] = self._truncated(ids)
            check_input(index, ids, self.model, self.name)
        return out

    def _truncated(self, ids: list[int]) -> list[int]:
        """``ids`` cut to ``max_tokens``: the end of the text goes, the special tokens the
        tokenizer closes every text with (BERT's ``[SEP]``) stay."""
        limit = self.model.max_tokens
        if len(ids) <= limit:
            return ids
        tail = closing_tokens(ids, self.model.tokenize([""])[0])
        return ids[: limit - len(tail)] + tail

    async def aclose(self) -> None:
        await asyncio.to_thread(self.batcher.close)


def closing_tokens(ids: list[int], empty: list[int]) -> list[int]:
    """The special tokens the tokenizer ends ``ids`` with: the longest end of ``empty`` (what
    it makes of an empty text, e.g. ``[CLS] [SEP]``) that ``ids`` also ends with, short of
    all of it (its start is the opening tokens)."""
    for size in range(len(empty) - 1, 0, -1):
        if ids[-size:] == empty[-size:]:
            return ids[-size:]
    return []


def check_dimensions(dimensions: int | None, native: int, name: str) -> None:
    """``dimensions`` other than the model's own is refused: its vectors were not trained to
    be cut (as vLLM refuses it for a model that is not Matryoshka)."""
    if dimensions is not None and dimensions != native:
        raise UnsupportedParameterError(
            f"model '{name}' makes {native}-dimensional embeddings and cannot shorten them; "
            f"omit 'dimensions' (or send {native})",
            param="dimensions",
        )


def check_input(index: int, ids: list[int], model: EmbeddingModel, name: str) -> None:
    """An input longer than the model reads is a 400, never silently cut (as OpenAI does)."""
    if len(ids) > model.max_tokens:
        raise ContextLengthExceededError(
            f"input[{index}] is {len(ids)} tokens, but model '{name}' reads at most "
            f"{model.max_tokens} tokens per input; shorten or split it",
            param="input",
        )
    bad = next((t for t in ids if not 0 <= t < model.vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"input[{index}] has token id {bad}, outside the vocabulary of model '{name}' "
            f"(0 to {model.vocab_size - 1}); token ids are the model's own, not tiktoken's "
            "(LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False) sends text)",
            param="input",
        )
