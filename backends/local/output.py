"""One choice's output on its way out of an in-process engine, written once for both engines.

An engine feeds ``ChoiceOutput.token`` the text each sampled token adds (and its logprob); it
gets back the events to emit. Stop strings are held back and cut here (a client never sees any
part of one); the token budget and end-of-generation tokens end the choice here. Output
features that read the text as it grows (reasoning split, tool-call parsing) belong here too.
"""

from __future__ import annotations

from collections.abc import Callable

from backends.events import Event, Finished, FinishReason, TextDelta, TokenLogprob
from backends.stop_strings import StopSequenceMatcher


class ChoiceOutput:
    """``reason`` is None while the choice runs; set once its ``Finished`` event was returned.
    ``tokens`` counts completion tokens (an end-of-generation token is not one)."""

    def __init__(
        self,
        index: int,
        stops: tuple[str, ...],
        budget: int,
        logprobs: bool,
        flush_text: Callable[[], str] = str,
    ) -> None:
        self.index = index
        self.tokens = 0
        self.reason: FinishReason | None = None
        self._budget = budget
        self._matcher = StopSequenceMatcher(list(stops))
        self._logprobs: list[TokenLogprob] | None = [] if logprobs else None
        self._flush_text = flush_text  # what the detokenizer still holds back, at the end

    def token(self, text: str | None, logprob: TokenLogprob | None = None) -> list[Event]:
        """Account for one sampled token: ``text`` is what it adds to the output, None for an
        end-of-generation token."""
        if text is None:
            return self._finish("stop", flush=True)
        self.tokens += 1
        if self._logprobs is not None and logprob is not None:
            self._logprobs.append(logprob)
        emit, hit = self._matcher.feed(text)
        events: list[Event] = [TextDelta(self.index, emit, self._take_logprobs())] if emit else []
        if hit:
            return [*events, *self._finish("stop", flush=False)]
        if self.tokens >= self._budget:
            return [*events, *self._finish("length", flush=True)]
        return events

    def _take_logprobs(self) -> tuple[TokenLogprob, ...] | None:
        if self._logprobs is None:
            return None
        taken, self._logprobs = tuple(self._logprobs), []
        return taken

    def _finish(self, reason: FinishReason, flush: bool) -> list[Event]:
        events: list[Event] = []
        if flush:
            tail = self._matcher.feed(self._flush_text())[0] + self._matcher.flush()
            if tail or self._logprobs:
                events.append(TextDelta(self.index, tail, self._take_logprobs()))
        self.reason = reason
        events.append(Finished(self.index, reason))
        return events
