"""One choice's output on its way out of an in-process engine, written once for both engines.

An engine feeds ``ChoiceOutput.token`` the text each sampled token adds (and its logprob); it
gets back the events to emit. In order, per piece of text:

1. stop strings are held back and cut (a client never sees any part of one); the token budget
   and end-of-generation tokens end the choice;
2. the reasoning split (``backends.local.reasoning``) sends thinking out as ``ReasoningDelta``;
3. the tool-call reader (``ToolCallReader``) turns calls in the answer into ``ToolCallDelta``s
   and the rest into ``TextDelta``s. A call that does not parse comes back as text: nothing the
   model wrote is dropped, except a call the token budget cut short (its markup is never
   content; vLLM's parsers drop such a further call too).

A choice that ends inside a multi-byte character (its token budget ran out between the bytes
of an emoji) ends before that character rather than with a U+FFFD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from backends.events import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
)
from backends.local.reasoning import ReasoningFormat, ReasoningSplitter, partial_suffix
from backends.local.tool_formats import ParsedCall, ToolFormat
from backends.stop_strings import StopSequenceMatcher

_REPLACEMENT = "\ufffd"  # how a detokenizer spells the bytes of an incomplete character


@dataclass(frozen=True)
class OutputSpec:
    """How a request's output is read: ``reasoning`` split (``reasoning_open``: the prompt
    already opened the thinking), tool calls read in ``tools`` format."""

    reasoning: ReasoningFormat | None = None
    reasoning_open: bool = False
    tools: ToolFormat | None = None


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
        spec: OutputSpec | None = None,
    ) -> None:
        self.index = index
        self.tokens = 0
        self.reason: FinishReason | None = None
        self._budget = budget
        self._matcher = StopSequenceMatcher(list(stops))
        self._logprobs: list[TokenLogprob] | None = [] if logprobs else None
        # where each token of ``_logprobs`` starts in the text fed so far, and how much of that
        # text got past the stop strings: the tokens of a stop string are not the answer's
        self._starts: list[int] = []
        self._fed = 0
        self._passed = 0
        # what the detokenizer still holds back at the end: at most an incomplete character,
        # which it spells U+FFFD; a choice cut there ends before it, as Ollama's runner does
        self._flush_text = flush_text
        spec = spec or OutputSpec()
        self._splitter = (
            ReasoningSplitter(spec.reasoning, spec.reasoning_open) if spec.reasoning else None
        )
        self._calls = ToolCallReader(spec.tools, index) if spec.tools else None

    def token(self, text: str | None, logprob: TokenLogprob | None = None) -> list[Event]:
        """Account for one sampled token: ``text`` is what it adds to the output, None for an
        end-of-generation token."""
        if text is None:
            return self._finish("stop", flush=True)
        self.tokens += 1
        if self._logprobs is not None and logprob is not None:
            self._logprobs.append(logprob)
            self._starts.append(self._fed)
        self._fed += len(text)
        emit, hit = self._matcher.feed(text)
        self._passed += len(emit)
        if hit:  # the tokens that start inside the stop string go with it
            keep = sum(1 for start in self._starts if start < self._passed)
            if self._logprobs:
                del self._logprobs[keep:]
        events = self._read(emit, final=False)
        if hit:
            return [*events, *self._finish("stop", flush=False)]
        if self.tokens >= self._budget:
            return [*events, *self._finish("length", flush=True)]
        return events

    def _read(self, text: str, final: bool, cut: bool = False) -> list[Event]:
        """Events for ``text`` past the stop strings (``final``: the output has ended; ``cut``:
        by the token budget)."""
        pieces: list[tuple[Literal["reasoning", "answer"], str]]
        if self._splitter is None:
            pieces = [("answer", text)] if text else []
        else:
            pieces = self._splitter.feed(text) if text else []
            if final:
                pieces += self._splitter.flush()
        events: list[Event] = []
        for kind, piece in pieces:
            if kind == "reasoning":
                events.append(ReasoningDelta(self.index, piece))
            elif self._calls is not None:
                events += self._calls.feed(piece)
            else:
                events.append(TextDelta(self.index, piece))
        if final and self._calls is not None:
            events += self._calls.finish(cut=cut)
        return self._with_logprobs(events)

    def _with_logprobs(self, events: list[Event]) -> list[Event]:
        """Logprobs ride on the next text delta (or wait for one)."""
        if not self._logprobs:
            return events
        for i, event in enumerate(events):
            if isinstance(event, TextDelta):
                events[i] = TextDelta(event.index, event.text, self._take_logprobs())
                break
        return events

    def _take_logprobs(self) -> tuple[TokenLogprob, ...] | None:
        if self._logprobs is None:
            return None
        taken, self._logprobs, self._starts = tuple(self._logprobs), [], []
        return taken

    def _finish(self, reason: FinishReason, flush: bool) -> list[Event]:
        tail = ""
        if flush:
            held = self._flush_text().rstrip(_REPLACEMENT)
            tail = self._matcher.feed(held)[0] + self._matcher.flush()
        # cut: by the token budget or a stop string (not by the model's own end)
        events = self._read(tail, final=True, cut=reason == "length" or not flush)
        if self._logprobs:
            events.append(TextDelta(self.index, "", self._take_logprobs()))
        if reason == "stop" and self._calls is not None and self._calls.count:
            reason = "tool_calls"
        self.reason = reason
        matched = self._matcher.matched if reason == "stop" else None
        events.append(Finished(self.index, reason, matched))
        return events


class ToolCallReader:
    """Reads one choice's answer for tool calls in ``fmt``: text streams as it comes (less a
    possible trigger's start, held back), and from the trigger on the text is held until calls
    are complete. A call is sent as two deltas: id and name, then its whole arguments."""

    def __init__(self, fmt: ToolFormat, index: int) -> None:
        self._fmt = fmt
        self._index = index
        self._mode: Literal["text", "calls", "plain"] = "text"
        self._held = ""  # text mode: held back; calls mode: the text from the trigger on
        self._sent_text = False
        self._done = 0  # calls of the current run already sent
        self.count = 0  # calls sent in all

    def feed(self, text: str) -> list[Event]:
        if self._mode == "plain":
            return self._text(text)
        self._held += text
        if self._mode == "text":
            return self._scan_text()
        return self._scan_calls(final=False)

    def finish(self, cut: bool = False) -> list[Event]:
        """The events the end of the answer completes. ``cut``: the token budget or a stop
        string ended it; what follows the whole calls then is an unfinished call (or text after
        the calls), not the answer's text, and is dropped (never sent as content); so is the
        start of a trigger held back (``<tool_c``)."""
        if self._mode == "calls":
            return self._scan_calls(final=True, cut=cut)
        held, self._held = self._held, ""
        if cut and self._mode == "text":
            return []
        return self._text(held) if held.strip() or self._sent_text else []

    def _scan_text(self) -> list[Event]:
        fmt, held = self._fmt, self._held
        if fmt.at_start_only:
            head = held.lstrip()
            openers = (fmt.trigger, *fmt.markers)
            if any(head.startswith(o) for o in openers):
                self._mode, self._held = "calls", head
                return self._scan_calls(final=False)
            if head and not any(o.startswith(head) for o in openers):
                self._mode, self._held = "plain", ""
                return self._text(held)
            return []
        at = held.find(fmt.trigger)
        if at >= 0:
            before, self._held = held[:at], held[at:]
            self._mode = "calls"
            events = self._text(before) if before.strip() or self._sent_text else []
            return events + self._scan_calls(final=False)
        keep = partial_suffix(held, fmt.trigger)
        emit, self._held = held[: len(held) - keep], held[len(held) - keep :]
        if not self._sent_text and not emit.strip():
            self._held = emit + self._held  # leading blank text waits: a call may follow
            return []
        return self._text(emit)

    def _scan_calls(self, final: bool, cut: bool = False) -> list[Event]:
        scan = self._fmt.scan(self._held, final)
        events: list[Event] = []
        for call in scan.calls[self._done :]:
            events += self._call(call)
        self._done = len(scan.calls)
        if final and cut:  # an unfinished call (or text after the calls): never content
            self._held = ""
            return events
        if scan.malformed:  # what is left is text, as written
            rest = self._held[scan.consumed :]
            self._mode, self._held, self._done = "plain", "", 0
            return events + self._text(rest)
        if final:
            rest = self._held[scan.consumed :]
            self._held = ""
            if rest.strip():
                events += self._text(rest)
        return events

    def _call(self, call: ParsedCall) -> list[Event]:
        number = self.count
        self.count += 1
        return [
            ToolCallDelta(self._index, number, self._fmt.call_id(), call.name, ""),
            ToolCallDelta(self._index, number, arguments=call.arguments),
        ]

    def _text(self, text: str) -> list[Event]:
        if not text:
            return []
        self._sent_text = True
        return [TextDelta(self._index, text)]
