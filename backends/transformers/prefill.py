"""Prompt admission for the transformers engine: requests whose prompts are being read.

``Prefills`` holds them in arrival order. Each prompt is read into its own KV cache, starting
from a copy of the longest prefix the ``PrefixCache`` holds for it (the earlier turns of its
chat), in slices of ``prefill_chunk`` tokens: while other sequences decode, one iteration reads
at most one slice's worth, so a long prompt delays their next token by one slice, not by the
whole prompt. Slices start after the reused prefix, then every ``prefill_chunk`` tokens, so a
prompt is read the same way whatever else is running (same shapes, same numerics).

A cancelled prefill leaves what it read in the prefix cache for the next try. The scheduler
hands in its ``forward`` (which sends the outbox and names the adapters) and joins each prompt
to the batch as soon as it is read, before the next one's slice runs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from backends.errors import GatewayError, InternalError
from backends.events import Event
from backends.local.bridge import Outbox
from backends.transformers.prefix_cache import PrefixCache
from backends.transformers.sequences import BatchStats, Prefill, Request

log = logging.getLogger(__name__)

Forward = Callable[..., Any]  # forward([adapter], input_ids=..., cache=...) -> model output


class Prefills:
    """See the module docstring. Used on the engine thread only."""

    def __init__(
        self,
        name: str,
        prefixes: PrefixCache,
        stats: BatchStats,
        outbox: Outbox[Event],
        device: Any,
        chunk: int,
    ) -> None:
        self._name = name
        self._prefixes = prefixes
        self._stats = stats
        self._outbox = outbox
        self._device = device
        self._chunk = chunk
        self._queue: deque[Prefill] = deque()

    def __bool__(self) -> bool:
        return bool(self._queue)

    @property
    def rows(self) -> int:
        """Batch rows the waiting prompts will take (a request's ``n`` choices each)."""
        return sum(p.request.job.n for p in self._queue)

    def requests(self) -> list[Request]:
        return [p.request for p in self._queue]

    def add(self, request: Request, adapter: str) -> None:
        self._queue.append(Prefill(request, adapter))

    def clear(self) -> None:
        self._queue.clear()

    def drop_cancelled(self) -> None:
        for prefill in [p for p in self._queue if p.request.bridge.stop.is_set()]:
            self._queue.remove(prefill)
            self._cancelled(prefill)

    def advance(self, forward: Forward, decoding: Callable[[], bool]) -> Iterator[Prefill]:
        """Read slices of the waiting prompts, yielding each prompt once it is read (its
        ``logits`` set): at most ``chunk`` tokens while ``decoding()``, else until none wait."""
        budget = self._chunk
        while self._queue and (budget > 0 or not decoding()):
            prefill = self._queue[0]
            if prefill.request.bridge.stop.is_set():
                self._queue.popleft()
                self._cancelled(prefill)
                continue
            try:
                budget -= self._slice(prefill, forward)
            except GatewayError as exc:
                self._failed(exc)
                continue
            except Exception:
                log.exception("model %s: prefill failed", self._name)
                self._failed(InternalError("the engine failed while reading the prompt"))
                continue
            if prefill.logits is not None:
                self._queue.popleft()
                yield prefill

    def keep(self, adapter: str, tokens: list[int], layers: list[Any]) -> None:
        """Keep ``tokens``' KV (``layers``) in the prefix cache."""
        self._prefixes.insert(adapter, tokens, layers)
        self._stats.prefix_cached_tokens = self._prefixes.tokens

    def _slice(self, prefill: Prefill, forward: Forward) -> int:
        """Run the next slice of ``prefill``'s prompt; return how many tokens it took."""
        if prefill.cache is None:
            self._start_cache(prefill)
        prompt = prefill.request.job.prompt
        piece = prompt[prefill.done : prefill.done + self._chunk]
        ids = torch.tensor([piece], dtype=torch.long, device=self._device)
        out = forward([prefill.adapter], input_ids=ids, cache=prefill.cache)
        prefill.done += len(piece)
        self._stats.prefill_tokens += len(piece)
        if prefill.done == len(prompt):
            prefill.logits = out.logits[:, -1, :]
        return len(piece)

    def _start_cache(self, prefill: Prefill) -> None:
        """Give ``prefill`` its KV cache: a copy of the longest cached prefix of its prompt
        (under its adapter), else an empty one."""
        from transformers import DynamicCache

        # No config: every layer keeps its whole history, so left padding lines up the same
        # way in every layer (a sliding-window layer would trim columns on its own).
        hit = self._prefixes.lookup(prefill.adapter, prefill.request.job.prompt)
        if hit is None:
            prefill.cache = DynamicCache()
            return
        prefill.cache = DynamicCache(ddp_cache_data=hit.layers)  # copies: the entry stays
        prefill.done = prefill.reused = prefill.request.cached_tokens = hit.tokens
        self._stats.prefix_hits += 1
        self._stats.prefix_hit_tokens += hit.tokens

    def _cancelled(self, prefill: Prefill) -> None:
        """Count a prefill whose client left; keep what it read (beyond what it reused)."""
        self._stats.requests_cancelled += 1
        if prefill.cache is not None and prefill.done > prefill.reused:
            layers = [(layer.keys, layer.values) for layer in prefill.cache.layers]
            self.keep(prefill.adapter, prefill.request.job.prompt[: prefill.done], layers)

    def _failed(self, error: GatewayError) -> None:
        prefill = self._queue.popleft()
        self._stats.requests_cancelled += 1
        self._outbox.fail(prefill.request.bridge, error)
