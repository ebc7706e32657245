"""Continuous batching for the llama.cpp engine: several sequences, one ``llama_decode`` a step.

``SequenceScheduler`` owns one llama.cpp context made for ``parallel`` sequences (a KV cache per
sequence id: a slot, ``backends.llama_cpp.slots``) and one thread. Requests wait in a bounded
FIFO queue (a full queue is a 429 at once). Before every step the thread drops sequences whose
client went away (their slot is free for the next step) and admits waiting requests into free
slots; a step then evaluates, in one batch, the last sampled token of every decoding sequence
and slices of the prompts still being read (at most ``n_batch`` tokens, fewer while others
decode, so a long prompt does not stall running streams). Each sequence samples from its own
logits row with its own sampler (``backends.llama_cpp.sampling``) and reads its output through
the shared ``ChoiceOutput``. The events of a step reach the event loop in one hand-off.

The choices of a request with ``n`` > 1 decode side by side, each in a slot of its own: once the
first choice's prompt is evaluated, every free slot takes a further choice, its cache a copy of
that prompt (``pick_slot``; only the last prompt token is evaluated again, for the choice's own
first sample). Choices that find no free slot start in their request's slots as earlier choices
end. LoRA adapters apply to the whole context, so sequences of one
adapter decode together: a request for another adapter waits (and holds the queue) until the
running ones end. A request's slot keeps its KV cache when it ends: the next request that
continues that prompt (the next turn of the chat) evaluates only its new tokens.
"""

from __future__ import annotations

import codecs
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncGenerator

from backends.errors import BackendUnavailableError, QueueFullError
from backends.events import Event, Started, Usage
from backends.llama_cpp.adapters import LoraAdapters
from backends.llama_cpp.batch import Job, RunningSequence, batch_parts
from backends.llama_cpp.native import DecodeBatch, LlamaContextHandles
from backends.llama_cpp.sampling import SequenceSampler, token_logprob
from backends.llama_cpp.slots import SlotCache, pick_slot
from backends.local.bridge import Outbox, ThreadBridge
from backends.local.engine import EngineStats
from backends.local.output import ChoiceOutput
from backends.local.plan import GenerationPlan

log = logging.getLogger(__name__)


class SequenceScheduler:
    """See the module docstring. ``submit`` runs on the event loop; everything else on the
    scheduler's own thread. ``close`` fails what still waits (503, retryable) and lets the
    running sequences finish; ``join`` waits for the thread."""

    def __init__(
        self,
        name: str,
        handles: LlamaContextHandles,
        adapters: LoraAdapters,
        parallel: int,
        n_batch: int,
        max_queue: int,
        stats: EngineStats,
    ) -> None:
        self._name = name
        self._h = handles
        self._adapters = adapters
        self._n_batch = max(n_batch, parallel)
        self._max_queue = max_queue
        self._stats = stats
        self._slots = [SlotCache(seq_id) for seq_id in range(parallel)]
        self._running: list[RunningSequence] = []
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._free = parallel  # free slots, as last counted by the thread
        self._closing = False
        self._tick = 0
        self._batch = DecodeBatch(self._n_batch)
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Requests admitted but not yet decoding."""
        return len(self._queue)

    # -- the event loop side ----------------------------------------------------------------

    async def submit(self, plan: GenerationPlan) -> AsyncGenerator[Event, None]:
        """The request's events; ``QueueFullError`` at once when ``max_queue`` requests already
        wait for a slot. Closing the iterator stops the request within one step."""
        bridge: ThreadBridge[Event] = ThreadBridge()
        with self._cond:
            if self._closing:
                raise self._unloaded()
            if len(self._queue) >= self._max_queue + self._free:
                raise QueueFullError(
                    f"model '{self._name}' is busy: {len(self._queue)} requests already wait "
                    f"(max_queue={self._max_queue}); retry later",
                    retry_after=1.0,
                )
            self._queue.append(Job(plan, bridge))
            self._cond.notify()
        items = bridge.items()
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    def close(self) -> None:
        """Admit nothing more; fail the requests still waiting."""
        with self._cond:
            self._closing = True
            waiting, self._queue = list(self._queue), deque()
            self._cond.notify()
        for job in waiting:
            job.bridge.fail(self._unloaded())

    def join(self) -> None:
        """Wait until the running sequences ended and the thread stopped (blocking)."""
        self._thread.join()

    def _unloaded(self) -> BackendUnavailableError:
        return BackendUnavailableError(f"model '{self._name}' was unloaded", retry_after=5)

    # -- the scheduler thread ---------------------------------------------------------------

    def _run(self) -> None:
        outbox: Outbox[Event] = Outbox()
        try:
            while True:
                if not self._running:
                    outbox.send()  # no decode comes next to send it
                with self._cond:
                    while not self._running and not self._queue and not self._closing:
                        self._cond.wait()
                    if self._closing and not self._running:
                        return
                self._step(outbox)
        except BaseException:  # a bug: fail everyone rather than hang them
            log.exception("the llama.cpp scheduler of %s failed", self._name)
            while self._running:
                self._end(self._running[0].job, outbox, RuntimeError("the llama.cpp engine failed"))
            outbox.send()
            self.close()
        finally:
            self._batch.free()

    def _step(self, outbox: Outbox[Event]) -> None:
        for seq in list(self._running):
            if seq.job.bridge.stop.is_set() and seq.job.running:
                self._end(seq.job, outbox, None)
        self._fork(outbox)
        self._admit(outbox)
        if not self._running:
            return
        n = self._fill_batch()
        if n:
            self._decode(n, outbox)
        else:
            outbox.send()

    def _admit(self, outbox: Outbox[Event]) -> None:
        if not self._queue:  # read without the lock: a request queued just now joins next step
            self._free = len(self._slots) - len(self._running)
            return
        with self._cond:
            if any(job.bridge.stop.is_set() for job in self._queue):  # cancelled while waiting
                self._queue = deque(j for j in self._queue if not j.bridge.stop.is_set())
            busy = {seq.slot.seq_id for seq in self._running}
            free = [slot for slot in self._slots if slot.seq_id not in busy]
            while self._queue and free:
                job = self._queue[0]
                if self._running and job.plan.adapter != self._adapters.active:
                    break  # another adapter's sequences decode now; FIFO: wait for them
                self._queue.popleft()
                try:
                    self._start(job, free, outbox)
                except Exception as exc:
                    log.exception("could not start a request on %s", self._name)
                    outbox.fail(job.bridge, exc)
                    continue
                free = [slot for slot in free if slot.seq_id not in self._busy_ids()]
            self._free = len(free)

    def _busy_ids(self) -> set[int]:
        return {seq.slot.seq_id for seq in self._running}

    def _fork(self, outbox: Outbox[Event]) -> None:
        """Start the further choices of running requests whose prompt is evaluated (a choice of
        theirs has no prompt left to read) in the free slots, before new requests."""
        for seq in self._running:
            if seq.job.unstarted and not seq.pending:
                break
        else:
            return
        for seq in list(self._running):
            job = seq.job
            if seq.pending or not job.running:
                continue
            busy = self._busy_ids()
            while job.unstarted and len(busy) < len(self._slots):
                free = [slot for slot in self._slots if slot.seq_id not in busy]
                try:
                    self._start_choice(job, free, outbox)
                except Exception as exc:
                    log.exception("could not start a choice on %s", self._name)
                    self._end(job, outbox, exc)
                    break
                busy = self._busy_ids()

    def _start(self, job: Job, free: list[SlotCache], outbox: Outbox[Event]) -> None:
        if not self._running:
            self._adapters.use(job.plan.adapter)
        self._start_choice(job, free, outbox)
        self._stats.requests_started += 1

    def _start_choice(self, job: Job, free: list[SlotCache], outbox: Outbox[Event]) -> None:
        """Start ``job``'s next choice in one of the ``free`` slots (``pick_slot``)."""
        import llama_cpp

        plan = job.plan
        busy = [seq.slot for seq in self._running]
        choice = pick_slot(free, busy, plan.prompt, plan.adapter)
        slot = choice.target
        if choice.source is not None:
            llama_cpp.llama_memory_seq_cp(self._h.memory, choice.source.seq_id, slot.seq_id, -1, -1)
            slot.tokens = list(choice.source.tokens)
            slot.adapter = choice.source.adapter
        self._tick += 1
        slot.last_used = self._tick
        self._running.append(self._choice(job, slot, choice.reuse, outbox))

    def _choice(
        self, job: Job, slot: SlotCache, reuse: int, outbox: Outbox[Event]
    ) -> RunningSequence:
        """Start ``job``'s next choice in ``slot``, whose cache holds ``reuse`` prompt tokens."""
        import llama_cpp

        plan = job.plan
        index = job.started
        reuse = min(reuse, len(plan.prompt) - 1)  # the last prompt token's logits seed sampling
        if not llama_cpp.llama_memory_seq_rm(self._h.memory, slot.seq_id, reuse, -1):
            llama_cpp.llama_memory_seq_rm(self._h.memory, slot.seq_id, -1, -1)  # all or nothing
            reuse = 0
        del slot.tokens[reuse:]
        slot.adapter = plan.adapter
        self._stats.prefix_hit_tokens += reuse
        if index == 0:
            job.cached_tokens = reuse
        sampling = plan.sampling.for_choice(index)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        constraint = plan.grammar.constraint() if plan.grammar is not None else None
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        output = ChoiceOutput(
            index,
            plan.stops,
            plan.max_new_tokens,
            sampling.logprobs,
            flush_text=lambda: utf8.decode(b"", final=True),
            spec=plan.spec,
        )
        sampler = SequenceSampler(sampling, seed, self._h.vocab_size, constraint)
        pending = plan.prompt[reuse:]
        job.started += 1
        job.running += 1
        counts = (len(plan.prompt), reuse) if index == 0 else (None, 0)
        outbox.put(job.bridge, Started(index, *counts))
        return RunningSequence(
            job, index, slot, pending, sampler, output, utf8, visible=plan.visible
        )

    def _fill_batch(self) -> int:
        """Put this step's tokens in the batch (``batch_parts``); returns how many."""
        n, prefill = self._batch.fill(batch_parts(self._running, self._n_batch))
        self._stats.prefill_tokens += prefill
        return n

    def _decode(self, n: int, outbox: Outbox[Event]) -> None:
        import llama_cpp

        outbox.send()  # last step's tokens: the loop wakes while this thread leaves the GIL
        status = llama_cpp.llama_decode(self._h.ctx, self._batch.native)
        if status != 0:
            error = RuntimeError(f"llama_decode failed (status {status}) on {n} tokens")
            for seq in self._running:
                self._drop_cache(seq.slot)
            while self._running:
                self._end(self._running[0].job, outbox, error)
            return
        for seq in list(self._running):
            if seq.logits_at < 0:  # nothing to sample, or its request ended this step
                continue
            try:
                self._sample(seq, outbox)
            except Exception as exc:
                log.exception("a sequence of %s failed", self._name)
                self._end(seq.job, outbox, exc)

    def _sample(self, seq: RunningSequence, outbox: Outbox[Event]) -> None:
        import llama_cpp

        sampling = seq.job.plan.sampling
        token, logits = seq.sampler.sample(self._h.ctx, seq.logits_at, sampling.logprobs)
        output = seq.output
        if llama_cpp.llama_vocab_is_eog(self._h.vocab, token):
            outbox.extend(seq.job.bridge, output.token(None))
        else:
            self._stats.tokens_generated += 1
            logprob = None
            if logits is not None:
                piece = self._h.piece
                top = sampling.for_choice(seq.index).top_logprobs
                logprob = token_logprob(logits, token, top, lambda t: piece(t, False))
            text = seq.utf8.decode(self._h.piece(token, token in seq.visible))
            outbox.extend(seq.job.bridge, output.token(text, logprob))
        if output.reason is None:
            seq.next_token = token
        else:
            self._next_choice(seq, outbox)

    def _next_choice(self, seq: RunningSequence, outbox: Outbox[Event]) -> None:
        """``seq``'s choice ended: its slot takes the request's next choice, if one waits; the
        request ends with its last choice."""
        job = seq.job
        job.completion_tokens += seq.output.tokens
        job.running -= 1
        seq.sampler.close()
        self._running.remove(seq)
        if job.unstarted:
            self._running.append(self._choice(job, seq.slot, len(seq.slot.tokens), outbox))
            return
        if job.running:
            return
        outbox.put(
            job.bridge, Usage(len(job.plan.prompt), job.completion_tokens, job.cached_tokens)
        )
        outbox.close(job.bridge)
        self._stats.requests_finished += 1

    def _end(self, job: Job, outbox: Outbox[Event], error: BaseException | None) -> None:
        """End ``job`` early, all its choices: its client went away (``error`` None) or it
        failed. What their slots evaluated stays cached (it is valid KV)."""
        for seq in [seq for seq in self._running if seq.job is job]:
            seq.sampler.close()
            seq.logits_at = -1
            self._running.remove(seq)
        job.running = 0
        self._stats.requests_cancelled += 1
        if error is not None:
            outbox.fail(job.bridge, error)
        else:
            outbox.close(job.bridge)

    def _drop_cache(self, slot: SlotCache) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._h.memory, slot.seq_id, -1, -1)
        slot.tokens.clear()
