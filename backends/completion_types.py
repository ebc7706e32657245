"""OpenAI wire types for the legacy completions endpoint (``POST /v1/completions``): a raw
prompt in, text out. The request keeps unknown fields for an OpenAI-compatible upstream (the
relay); the responses are exact. A leaf: pydantic and ``backends.openai_types`` only.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from backends.check_errors import CrossFieldError
from backends.openai_types import TextRequest, Usage
from backends.wire_base import WireResponse

# OpenAI's (and vLLM's) default when the client sends no max_tokens.
DEFAULT_MAX_TOKENS = 16

TokenIds = list[Annotated[int, Field(ge=0)]]
Prompt = str | list[str] | TokenIds | list[TokenIds]


class CompletionRequest(TextRequest):
    """``POST /v1/completions``. ``prompt`` is a string, a list of strings (one set of ``n``
    choices each), or token ids (one list or a list of lists)."""

    prompt: Prompt
    suffix: str | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    best_of: Annotated[int, Field(ge=1, le=16)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool | None = False

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and (not value or any(v == [] for v in value)):
            raise ValueError("prompt must not be an empty list")
        return value

    @model_validator(mode="after")
    def _best_of_covers_n(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise CrossFieldError("best_of", "best_of must be at least n")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a text, or token ids."""
        value = self.prompt
        if isinstance(value, str):
            return [value]
        if all(isinstance(v, int) for v in value):
            return [[int(v) for v in value]]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]


class CompletionLogprobs(WireResponse):
    """The legacy logprobs shape: parallel lists, one entry per token of ``text``;
    ``text_offset`` is each token's character offset in the choice's text."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class CompletionChoice(WireResponse):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class Completion(WireResponse):
    """A whole completion, or one stream chunk (the same object; a chunk's ``usage`` is
    left out except on the last chunk when the client asked for it)."""

    _omit_if_none = frozenset({"usage"})

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
