"""Stop-sequence matching over streamed text.

Text that might be the start of a stop sequence is held back until it is known not to be,
so a client never sees any part of a stop string (as OpenAI and llama.cpp's server behave).
"""

from __future__ import annotations


class StopSequenceMatcher:
    """Feed generated text piece by piece; get back what is safe to emit.

    ``feed`` returns ``(emit, stopped)``: once ``stopped`` is true the text before the earliest
    stop sequence has been emitted and the rest must be discarded, and ``matched`` is that stop
    sequence (the first listed, of those found at the earliest position). ``flush`` returns
    what is still held back when generation ends for another reason.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [(at, stop) for stop in self._stops if (at := buffer.find(stop)) >= 0]
        if hits:
            first, self.matched = min(hits, key=lambda hit: hit[0])
            self._held = ""
            return buffer[:first], True
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best
