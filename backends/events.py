"""What a backend's generation yields, per request, in order (docs/architecture.md).

For each choice: ``Started(index)``, then any of ``TextDelta`` / ``ReasoningDelta`` /
``ToolCallDelta``, then ``Finished(index, reason)``. Choices of one request may interleave (a
batching engine decodes them side by side). The last event is ``Usage`` with the request's
exact token counts. Surfaces turn these into their own wire format; no surface's types appear
here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class TopToken:
    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The log-probability of one generated token under the raw distribution (before sampling
    transforms), with the ``top`` most likely alternatives."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[TopToken, ...] = ()


@dataclass(frozen=True, slots=True)
class Started:
    """Choice ``index`` began. The first choice's carries the request's prompt tokens and how
    many of them a cache held, when the backend knows them before it generates (in-process
    engines; an upstream says only at the end, in ``Usage``): Anthropic's ``message_start``
    reports them."""

    index: int
    prompt_tokens: int | None = None
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not asked for


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Thinking text, apart from the answer."""

    index: int
    text: str


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id (``call_`` and 24 hex digits)."""
    return f"call_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of tool call number ``call`` of choice ``index``: its first delta carries ``id``
    and ``name``; ``arguments`` pieces concatenate to the call's JSON arguments."""

    index: int
    call: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finished:
    """Choice ``index`` ended. ``stop_sequence``: the client's stop string that ended it, when
    the backend knows (in-process engines do; an upstream only if it says, as vLLM does)."""

    index: int
    reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of a request. ``cached_tokens``: of ``prompt_tokens``, how many were read
    from a prefix cache instead of evaluated (None: the backend does not say)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


Event = Started | TextDelta | ReasoningDelta | ToolCallDelta | Finished | Usage
