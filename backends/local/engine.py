"""The engine seam: what an in-process engine supplies to the shared layer
(``backends.local.backend.LocalBackend``), and the counters every engine keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from backends.events import Event
from backends.local.plan import EngineLimits, GenerationPlan
from backends.requests import GenerationRequest, OutputConstraint


@dataclass
class EngineStats:
    """Engine-side counters, written by the engine thread (read by tests and benchmarks)."""

    tokens_generated: int = 0
    prefill_tokens: int = 0
    requests_started: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0  # ended early: client gone (or the engine failed)


class LocalEngine(Protocol):
    """A loaded model, as the shared layer sees it.

    - ``prompt_tokens`` and ``compile_constraint`` may run in any worker thread (rendering the
      chat template and tokenizing only read the vocabulary); they raise ``InvalidRequestError``
      for what the model cannot take (a template that rejects the messages, a bad grammar).
    - ``submit`` is called on the event loop and returns the request's events, produced on the
      engine's own thread (``Started`` per choice, deltas, ``Finished``, then ``Usage``);
      closing that iterator stops the request within about one decode step. It raises
      ``QueueFullError`` when the engine's queue is full (at the latest on the first ``anext``).
    - ``waiting`` counts requests admitted but not started; ``aclose`` fails what is still
      queued with ``BackendUnavailableError`` (retryable) and lets go of the model. A running
      request finishes first (llama.cpp) or fails the same way (transformers).
    """

    limits: EngineLimits

    @property
    def stats(self) -> EngineStats: ...

    @property
    def waiting(self) -> int: ...

    def prompt_tokens(self, request: GenerationRequest) -> list[int]: ...

    def compile_constraint(self, constraint: OutputConstraint) -> Any: ...

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]: ...

    async def aclose(self) -> None: ...
