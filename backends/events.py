"""What an in-process engine's generation yields, per request, in order.

For each choice: ``Started(index)``, then ``Piece``s, then ``Finished(index, reason)``; choices
of one request may interleave (a batching engine decodes them side by side). The last event
is ``Counted`` with the request's exact token usage. ``events_to_chunks`` turns them into the
OpenAI chunks every backend yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from backends.base import ChunkBuilder
from backends.schemas import ChatCompletionChunk, FinishReason, TokenLogprob


@dataclass(frozen=True, slots=True)
class Started:
    index: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    text: str
    logprobs: list[TokenLogprob] | None


@dataclass(frozen=True, slots=True)
class Finished:
    index: int
    reason: FinishReason


@dataclass(frozen=True, slots=True)
class Counted:
    prompt_tokens: int
    completion_tokens: int


Event = Started | Piece | Finished | Counted


async def events_to_chunks(
    events: AsyncIterator[Event], chunks: ChunkBuilder
) -> AsyncIterator[ChatCompletionChunk]:
    """Map engine events to chunks; closing this iterator closes ``events``."""
    try:
        async for event in events:
            if isinstance(event, Piece):
                yield chunks.content(event.text, event.index, event.logprobs)
            elif isinstance(event, Started):
                yield chunks.role(event.index)
            elif isinstance(event, Finished):
                yield chunks.finish(event.reason, event.index)
            else:
                yield chunks.usage(event.prompt_tokens, event.completion_tokens)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
