"""An output item of the Responses API as it is built (``OutputItemDraft``), and the ids of
responses and items."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Literal

from backends.responses_types import (
    ItemStatus,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
)

ItemKind = Literal["message", "reasoning", "function_call"]
_PREFIX: dict[ItemKind, str] = {"message": "msg", "reasoning": "rs", "function_call": "fc"}


def new_item_id(kind: ItemKind) -> str:
    return f"{_PREFIX[kind]}_{secrets.token_hex(24)}"


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


@dataclass
class OutputItemDraft:
    """The output item being streamed."""

    kind: ItemKind
    output_index: int
    id: str
    call: int = -1  # a function call: its number in the choice
    call_id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def wire(self, status: ItemStatus, whole: bool = True) -> OutputItem:
        """The item as sent: ``whole`` with its text, else as first announced (empty)."""
        text = self.text if whole else ""
        if self.kind == "function_call":
            return OutputFunctionCall(
                id=self.id, call_id=self.call_id, name=self.name, arguments=text, status=status
            )
        if self.kind == "reasoning":
            content = [ReasoningText(text=text)] if whole else []
            return OutputReasoning(id=self.id, content=content, status=status)
        return OutputMessage(
            id=self.id, status=status, content=[OutputText(text=text)] if whole else []
        )

    def part(self, whole: bool) -> OutputText | ReasoningText:
        text = self.text if whole else ""
        return ReasoningText(text=text) if self.kind == "reasoning" else OutputText(text=text)


def whole_json(text: str) -> bool:
    """Whether a call's arguments are a whole JSON object (an upstream may stream a cut one)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
