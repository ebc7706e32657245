"""The engine seam: what an in-process engine supplies to the shared layer
(``backends.local.backend.LocalBackend``), and the counters every engine keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from backends.events import Event
from backends.local.plan import EngineLimits, GenerationPlan
from backends.model_types import ModelPlacement


@dataclass
class EngineStats:
    """Engine-side counters, written by the engine thread (read by tests and benchmarks)."""

    tokens_generated: int = 0
    prefill_tokens: int = 0  # prompt tokens evaluated
    prefix_hit_tokens: int = 0  # prompt tokens found in the cache instead (prefix reuse)
    requests_started: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0  # ended early: client gone (or the engine failed)

    @property
    def batch_size(self) -> int:
        """Requests being decoded now."""
        return max(0, self.requests_started - self.requests_finished - self.requests_cancelled)


class LocalEngine(Protocol):
    """A loaded model, as the shared layer sees it.

    - ``chat_template``, ``render_chat``, ``tokenize`` (``backends.local.chat.ChatEngine``),
      ``special_tokens`` (text -> id of the vocabulary's special tokens) and
      ``grammar_tokenizer`` (the vocabulary as llguidance reads it, built once, on first use)
      may be called from any worker thread: they only read the vocabulary.
    - ``submit`` is called on the event loop and returns the request's events, produced on the
      engine's own thread (``Started`` per choice, deltas, ``Finished``, then ``Usage``);
      closing that iterator stops the request within about one decode step. It raises
      ``QueueFullError`` when the engine's queue is full (at the latest on the first ``anext``).
    - ``waiting`` counts requests admitted but not started; ``aclose`` fails what is still
      queued with ``BackendUnavailableError`` (retryable) and lets go of the model. A running
      request finishes first (llama.cpp) or fails the same way (transformers).
    """

    limits: EngineLimits
    placement: ModelPlacement  # where it runs: device, offloaded layers, sequences per batch

    @property
    def stats(self) -> EngineStats: ...

    @property
    def waiting(self) -> int: ...

    @property
    def chat_template(self) -> str | None: ...

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **options: Any
    ) -> tuple[str, bool]: ...

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...

    @property
    def special_tokens(self) -> Mapping[str, int]: ...

    def grammar_tokenizer(self) -> Any: ...

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]: ...

    async def aclose(self) -> None: ...
