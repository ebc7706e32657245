"""Thinking apart from the answer, for both in-process engines (docs/tools.md).

A ``ReasoningFormat`` names a family's thinking tags; a ``ReasoningSplitter`` reads one
choice's text as it streams and says which pieces are thinking and which are the answer. The
thinking may open the output (``<think>...</think>`` as Qwen3 writes it) or the prompt may
already have opened it (DeepSeek-R1's generation prompt ends with ``<think>\\n``); a tag split
across tokens is held back until it is known, like a stop string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Piece = tuple[Literal["reasoning", "answer"], str]


@dataclass(frozen=True, slots=True)
class ReasoningFormat:
    name: str
    open: str
    close: str

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.open, self.close)

    def detect(self, template: str) -> bool:
        return self.close in template

    def opened_by(self, prompt: str) -> bool:
        """Whether ``prompt`` (a rendered chat) leaves the model inside its thinking."""
        tail = prompt.rstrip()
        return tail.endswith(self.open)


FORMATS: dict[str, ReasoningFormat] = {
    f.name: f
    for f in (
        ReasoningFormat("think", "<think>", "</think>"),
        ReasoningFormat("mistral", "[THINK]", "[/THINK]"),
    )
}


def detect_reasoning(template: str | None) -> ReasoningFormat | None:
    if not template:
        return None
    return next((f for f in FORMATS.values() if f.detect(template)), None)


class ReasoningSplitter:
    """``feed`` text, get ``(kind, text)`` pieces; ``flush`` at the end. Whitespace between
    the closing tag and the answer is dropped, as is whitespace before an opening tag."""

    def __init__(self, fmt: ReasoningFormat, inside: bool) -> None:
        self._fmt = fmt
        self._state: Literal["start", "inside", "answer"] = "inside" if inside else "start"
        self._held = ""
        self._answer_started = False

    def feed(self, text: str) -> list[Piece]:
        self._held += text
        pieces: list[Piece] = []
        while True:
            if self._state == "start":
                head = self._held.lstrip()
                if head.startswith(self._fmt.open):
                    self._held = head[len(self._fmt.open) :]
                    self._state = "inside"
                    continue
                if head and not self._fmt.open.startswith(head):
                    self._state, self._answer_started = "answer", True
                    continue
                return pieces  # nothing yet, or maybe the opening tag
            if self._state == "inside":
                close = self._held.find(self._fmt.close)
                if close >= 0:
                    thought, self._held = (
                        self._held[:close],
                        self._held[close + len(self._fmt.close) :],
                    )
                    if thought:
                        pieces.append(("reasoning", thought))
                    self._state = "answer"
                    continue
                keep = partial_suffix(self._held, self._fmt.close)
                thought = self._held[: len(self._held) - keep]
                self._held = self._held[len(self._held) - keep :]
                if thought:
                    pieces.append(("reasoning", thought))
                return pieces
            answer = self._held if self._answer_started else self._held.lstrip()
            self._held = ""
            if answer:
                self._answer_started = True
                pieces.append(("answer", answer))
            return pieces

    def flush(self) -> list[Piece]:
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state == "inside":
            return [("reasoning", held)]
        if self._state == "start":
            return [("answer", held)]
        return [("answer", held)] if self._answer_started or held.strip() else []


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
