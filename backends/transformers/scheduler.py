"""Continuous batching for the transformers engine: many requests, one forward pass per step.

``BatchScheduler`` owns one model and one thread. Requests wait in a bounded FIFO queue (a
full queue is a 429 at once). Between two decode steps the thread admits waiting requests:
each prompt is prefilled on its own (in slices, checking for cancellation between them), its
KV cache is merged into the running batch (left-padded to a common length), and from then on
one forward pass advances every sequence by one token. A sequence that finishes, or whose
client went away, leaves the batch before the next step; columns that only padding still
uses are trimmed away.

Prompts are read by ``Prefills`` (``prefill.py``). A sequence leaving the batch leaves its KV
in the ``PrefixCache`` (``prefix_cache.py``); a prompt that starts with a kept sequence's
tokens (the earlier turns of its chat) starts from a copy of that KV and prefills only the rest.

The batch's tensors and their padding live in ``backends.transformers.padded_batch``. Rows of
different LoRA adapters share the step through peft's ``adapter_names``. Each request's events
reach the event loop through its ``ThreadBridge``; what one iteration produced for all of them
goes in one hand-off (``bridge.Outbox``), as the llama.cpp engine's steps do, sent before
every forward pass (a prefill slice's or a decode step's), before finished rows' KV is copied
into the prefix cache, and at the end of the iteration.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import torch

from backends.errors import BackendUnavailableError, GatewayError, InternalError, QueueFullError
from backends.events import Event, Started, Usage
from backends.local.bridge import Outbox, ThreadBridge
from backends.local.output import ChoiceOutput
from backends.local.plan import GenerationPlan
from backends.transformers.detokenizer import IncrementalDetokenizer, TokenTexts
from backends.transformers.loading import LoadedModel
from backends.transformers.padded_batch import PaddedKVBatch
from backends.transformers.prefill import Prefills
from backends.transformers.prefix_cache import PrefixCache
from backends.transformers.sampling import RowSampler, TokenLogprobs, draw
from backends.transformers.sequences import BatchRow, BatchStats, Prefill, Request

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


class BatchScheduler:
    """See the module docstring. ``start`` launches the thread; ``close`` stops it, failing
    every request still queued or running with ``BackendUnavailableError``."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        name: str,
        max_batch_size: int,
        max_queue: int,
        torch_threads: int | None,
        prefill_chunk: int = 512,
        prefix_cache_tokens: int = 0,
    ) -> None:
        self._loaded = loaded
        self._model = loaded.model
        self._tokenizer = loaded.tokenizer
        # with device_map: auto, inputs go where the embeddings are (the model's first device)
        self._device = getattr(self._model, "device", None) or torch.device(loaded.device)
        self._name = name
        self._max_rows = max_batch_size
        self._max_queue = max_queue
        self._torch_threads = torch_threads
        self.stats = BatchStats()
        self._lock = threading.Condition()
        self._pending: deque[Request] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._token_texts = TokenTexts(loaded.tokenizer)
        # the batch: row i of self._batch is self._rows[i]
        self._rows: list[BatchRow] = []
        self._batch = PaddedKVBatch(self._device)
        self._prefixes = PrefixCache(prefix_cache_tokens)
        self._outbox: Outbox[Event] = Outbox()  # the engine thread's (when it is sent: above)
        self._prefills = Prefills(
            name, self._prefixes, self.stats, self._outbox, self._device, prefill_chunk
        )

    # -- the event-loop side ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"engine-{self._name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Requests queued, not yet admitted to the batch."""
        return len(self._pending)

    def close(self) -> None:
        """Stop the thread (blocking until it exits); idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def stream(self, job: GenerationPlan) -> AsyncIterator[Event]:
        """Queue ``job`` now (``QueueFullError`` when the queue is full) and return its events;
        closing the iterator cancels it (queued or running) within one decode step."""
        request = Request(job=job, bridge=ThreadBridge())
        self._submit(request)
        return request.bridge.items()

    def _submit(self, request: Request) -> None:
        with self._lock:
            if self._closing or self._thread is None:
                raise BackendUnavailableError(f"model '{self._name}' is not loaded", retry_after=5)
            free_rows = max(0, self._max_rows - self.stats.rows)
            if len(self._pending) >= self._max_queue + free_rows:
                raise QueueFullError(
                    f"model '{self._name}' is busy: {len(self._pending)} requests already wait "
                    f"(max_queue={self._max_queue}); retry later",
                    retry_after=1.0,
                )
            self._pending.append(request)
            self._lock.notify()

    # -- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
        try:
            with torch.inference_mode():
                while True:
                    arrivals = self._next_arrivals()
                    if arrivals is None:
                        break
                    self._iterate(arrivals)
        finally:
            self._shutdown()

    def _iterate(self, arrivals: list[Request]) -> None:
        try:
            for request in arrivals:
                self.stats.requests_started += 1
                self._prefills.add(request, request.job.adapter or BASE_ADAPTER)
            self._drop_cancelled()
            for prefill in self._prefills.advance(self._forward, lambda: bool(self._rows)):
                self._join(prefill)
            if self._rows:
                self._decode_step()
        except Exception:  # a bug or a device failure: fail the batch, keep serving
            log.exception("model %s: the batch failed", self._name)
            self._fail_rows(InternalError("the engine failed while generating"))
        finally:
            self._outbox.send()

    def _next_arrivals(self) -> list[Request] | None:
        """Requests to admit now (FIFO, as many as free rows allow); blocks while idle.
        None when closing."""
        with self._lock:
            while not self._pending and not self._rows and not self._prefills and not self._closing:
                self._lock.wait()
            if self._closing:
                return None
            taken: list[Request] = []
            free = self._max_rows - len(self._rows)
            free -= self._prefills.rows
            while self._pending and self._pending[0].job.n <= free:
                request = self._pending.popleft()
                if request.bridge.stop.is_set():
                    self.stats.requests_cancelled += 1
                    continue
                taken.append(request)
                free -= request.job.n
            return taken

    def _join(self, prefill: Prefill) -> None:
        """Move a prefilled request into the batch: its first token comes from the logits of
        the prompt's last position."""
        request, cache, logits = prefill.request, prefill.cache, prefill.logits
        assert logits is not None
        n = request.job.n
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        request.remaining = n
        sequences = [self._sequence(request, i, prefill.adapter) for i in range(n)]
        prompt = (len(request.job.prompt), request.cached_tokens)
        for sequence in sequences:
            index = sequence.output.index
            self._outbox.put(request.bridge, Started(index, *(prompt if index == 0 else (None, 0))))
        drawn = draw(logits.float().clone(), [s.sampler for s in sequences])
        self._batch.add(cache, len(request.job.prompt), drawn.tokens)
        self._rows.extend(sequences)
        self.stats.rows = len(self._rows)
        self.stats.peak_rows = max(self.stats.peak_rows, len(self._rows))
        for sequence, token, logprob in zip(sequences, drawn.tokens, drawn.logprobs, strict=True):
            self._accept(sequence, token, logprob)
        self._remove_done()

    def _sequence(self, request: Request, index: int, adapter: str) -> BatchRow:
        job = request.job
        params = job.sampling.for_choice(index)
        detokenizer = IncrementalDetokenizer(self._tokenizer, job.visible)
        output = ChoiceOutput(
            index, job.stops, job.max_new_tokens, params.logprobs, detokenizer.flush, job.spec
        )
        constraint = job.grammar.constraint() if job.grammar is not None else None
        return BatchRow(
            request=request,
            sampler=RowSampler(params, self._loaded.vocab_size, self._device, constraint),
            detokenizer=detokenizer,
            output=output,
            adapter=adapter,
        )

    def _forward(self, adapters: list[str], **kwargs: Any) -> Any:
        self._outbox.send()  # what is ready goes out now, not after this forward
        if self._loaded.adapters:
            kwargs["adapter_names"] = adapters
        self.stats.forward_passes += 1
        return self._model(use_cache=True, logits_to_keep=1, **kwargs)

    def _decode_step(self) -> None:
        rows = self._rows
        out = self._forward([s.adapter for s in rows], **self._batch.decode_inputs())
        self.stats.decode_steps += 1
        drawn = draw(out.logits[:, -1, :].float(), [s.sampler for s in rows])
        self._batch.advance(drawn.tokens)
        for sequence, token, logprob in zip(rows, drawn.tokens, drawn.logprobs, strict=True):
            self._accept(sequence, token, logprob)
        self._remove_done()

    def _accept(self, sequence: BatchRow, token: int, logprob: TokenLogprobs | None) -> None:
        """Account for one sampled token of ``sequence``: emit its text, detect its end."""
        request, output = sequence.request, sequence.output
        sequence.sampler.follow(token)
        sequence.drawn.append(token)
        if token in self._loaded.eos_token_ids:
            self._outbox.extend(request.bridge, output.token(None))
        else:
            self.stats.tokens_generated += 1
            request.completion_tokens += 1
            sequence.sampler.observe(token)
            report = self._token_texts.logprob(token, logprob) if logprob is not None else None
            text = sequence.detokenizer.push(token)
            self._outbox.extend(request.bridge, output.token(text, report))
        if output.reason is None:
            return
        sequence.done = True
        request.remaining -= 1
        if request.remaining == 0:
            self.stats.requests_finished += 1
            usage = Usage(len(request.job.prompt), request.completion_tokens, request.cached_tokens)
            self._outbox.put(request.bridge, usage)
            self._outbox.close(request.bridge)

    def _drop_cancelled(self) -> None:
        self._prefills.drop_cancelled()
        cancelled = {
            id(s.request) for s in self._rows if s.request.bridge.stop.is_set() and not s.done
        }
        if not cancelled:
            return
        for sequence in self._rows:
            if id(sequence.request) in cancelled:
                sequence.done = True
        self.stats.requests_cancelled += len(cancelled)
        self._remove_done()

    def _remove_done(self) -> None:
        keep = [i for i, s in enumerate(self._rows) if not s.done]
        if len(keep) == len(self._rows):
            return
        self._outbox.send()  # their last events go out before their KV is copied away
        if self._prefixes.enabled:
            for i, sequence in enumerate(self._rows):
                if sequence.done:
                    self._keep_row(i, sequence)
        self._rows = [self._rows[i] for i in keep]
        self.stats.rows = len(self._rows)
        self._batch.keep(keep)

    def _keep_row(self, row: int, sequence: BatchRow) -> None:
        """Keep the KV of a row leaving the batch: its prompt and every drawn token but the
        last (never fed back)."""
        tokens = sequence.request.job.prompt + sequence.drawn[:-1]
        if len(tokens) >= self._prefixes.min_tokens:
            self._prefills.keep(sequence.adapter, tokens, self._batch.row_kv(row, len(tokens)))

    def _fail_rows(self, error: GatewayError) -> None:
        failed = {id(s.request): s.request for s in self._rows if not s.done}
        failed.update((id(request), request) for request in self._prefills.requests())
        self._prefills.clear()
        self._rows = []
        self.stats.rows = 0
        self._batch.clear()
        for request in failed.values():
            self.stats.requests_cancelled += 1
            self._outbox.fail(request.bridge, error)

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
            pending = list(self._pending)
            self._pending.clear()
        error = BackendUnavailableError(f"model '{self._name}' was unloaded", retry_after=5)
        for request in pending:
            self._outbox.fail(request.bridge, error)
        self._fail_rows(error)
        self._outbox.send()
        self._prefixes.clear()
        self.stats.prefix_cached_tokens = 0
