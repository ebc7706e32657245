"""A backend's events as Anthropic's Messages output: ``MessageEventBuilder`` turns them into
the stream's events (``message_start``, per content block ``content_block_start`` /
``content_block_delta`` / ``content_block_stop``, a ``ping`` after the first block's start as
Anthropic sends, then ``message_delta`` and ``message_stop``), and the same builder folds a
whole answer into one ``MessageObject`` (``collect_message``), so both paths build the same
blocks.

Blocks follow the events in order of arrival: thinking opens a ``thinking`` block, text a
``text`` block, each tool call a ``tool_use`` block (its arguments as ``input_json_delta``
pieces); a block stops when an event of another block arrives or the choice finishes. Only
choice 0 exists (this surface never asks for ``n``). The prompt's token count is known only
at the end, so ``message_start`` says 0 input tokens and ``message_delta`` carries the real
count (Anthropic's usage there is cumulative: its SDK takes it). A failure after the stream
started is an ``error`` event with Anthropic's error body, and the stream ends.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from backends import events as ev
from backends.anthropic_types import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJSONDelta,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageObject,
    MessageStartEvent,
    MessageStopEvent,
    MessageStreamEvent,
    MessageUsage,
    PingEvent,
    SignatureDelta,
    StopReason,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
)
from backends.errors import GatewayError, InternalError, UpstreamError
from gateway.errors import anthropic_error_body
from gateway.sse import event_frame

log = logging.getLogger(__name__)

BlockKind = Literal["text", "thinking", "tool_use"]


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def stop_reason_of(finished: ev.Finished) -> tuple[StopReason, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for how the choice finished."""
    if finished.reason == "length":
        return "max_tokens", None
    if finished.reason == "tool_calls":
        return "tool_use", None
    if finished.reason == "content_filter":
        return "refusal", None
    if finished.stop_sequence is not None:
        return "stop_sequence", finished.stop_sequence
    return "end_turn", None


@dataclass
class _Block:
    """The content block being streamed."""

    kind: BlockKind
    index: int
    call: int = -1  # a tool call: its number in the choice
    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)
    cut: bool = False  # max_tokens ended it: a call's arguments may be half written

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def wire(self, whole: bool) -> ContentBlock:
        """The block as sent: ``whole`` with its content, else as first announced (empty)."""
        if self.kind == "tool_use":
            return ToolUseBlock(id=self.id, name=self.name, input=self.input() if whole else {})
        text = self.text if whole else ""
        if self.kind == "thinking":
            return ThinkingBlock(thinking=text)
        return TextBlock(text=text)

    def input(self) -> dict[str, Any]:
        if not self.text.strip():
            return {}
        try:
            value = json.loads(self.text)
        except ValueError:
            value = None
        if not isinstance(value, dict) and self.cut:
            return {}  # as Anthropic: the cut call is kept, and stop_reason says max_tokens
        if not isinstance(value, dict):
            raise UpstreamError(
                f"the model's call of tool '{self.name}' has arguments that are not a JSON "
                f"object: {self.text[:200]!r}"
            )
        return value


class MessageEventBuilder:
    """The stream events of one message. ``message`` starts empty and collects the content;
    ``done`` is set by ``message_stop``, after which ``feed`` returns nothing. ``feed`` raises
    ``UpstreamError`` for a tool call whose arguments are not a JSON object."""

    def __init__(self, model: str) -> None:
        self.message = MessageObject(
            id=new_message_id(), model=model, usage=MessageUsage(input_tokens=0, output_tokens=0)
        )
        self.done = False
        self._open: _Block | None = None
        self._finished: ev.Finished | None = None

    def start(self) -> list[MessageStreamEvent]:
        return [MessageStartEvent(message=self.message.model_copy(deep=True))]

    def feed(self, event: ev.Event) -> list[MessageStreamEvent]:
        if self.done or (not isinstance(event, ev.Usage) and event.index != 0):
            return []
        if isinstance(event, ev.TextDelta):
            return self._text("text", event.text)
        if isinstance(event, ev.ReasoningDelta):
            return self._text("thinking", event.text)
        if isinstance(event, ev.ToolCallDelta):
            return self._call(event)
        if isinstance(event, ev.Finished):
            self._finished = event
            if self._open is not None:
                self._open.cut = event.reason == "length"
            return self._close()
        if isinstance(event, ev.Usage):
            return self._end(event)
        return []

    def _text(self, kind: BlockKind, text: str) -> list[MessageStreamEvent]:
        if not text:
            return []
        out: list[MessageStreamEvent] = []
        if self._open is None or self._open.kind != kind:
            out += self._close()
            out += self._open_block(_Block(kind, len(self.message.content)))
        block = self._open
        assert block is not None
        block.pieces.append(text)
        delta = ThinkingDelta(thinking=text) if kind == "thinking" else TextDelta(text=text)
        out.append(ContentBlockDeltaEvent(index=block.index, delta=delta))
        return out

    def _call(self, delta: ev.ToolCallDelta) -> list[MessageStreamEvent]:
        out: list[MessageStreamEvent] = []
        block = self._open
        if block is None or block.kind != "tool_use" or block.call != delta.call:
            out += self._close()
            block = _Block(
                "tool_use",
                len(self.message.content),
                call=delta.call,
                id=tool_use_id(delta.id),
                name=delta.name or "",
            )
            out += self._open_block(block)
        if delta.arguments:
            block.pieces.append(delta.arguments)
            partial = InputJSONDelta(partial_json=delta.arguments)
            out.append(ContentBlockDeltaEvent(index=block.index, delta=partial))
        return out

    def _open_block(self, block: _Block) -> list[MessageStreamEvent]:
        self._open = block
        # reserve the block's place: `index` is its position in `content`
        self.message.content.append(block.wire(whole=False))
        started = ContentBlockStartEvent(index=block.index, content_block=block.wire(whole=False))
        if block.index == 0:  # as Anthropic's stream: a ping after the first block's start
            return [started, PingEvent()]
        return [started]

    def _close(self) -> list[MessageStreamEvent]:
        block, self._open = self._open, None
        if block is None:
            return []
        self.message.content[block.index] = block.wire(whole=True)
        out: list[MessageStreamEvent] = []
        if block.kind == "thinking":  # Anthropic ends a thinking block with its signature
            out.append(
                ContentBlockDeltaEvent(index=block.index, delta=SignatureDelta(signature=""))
            )
        out.append(ContentBlockStopEvent(index=block.index))
        return out

    def _end(self, usage: ev.Usage) -> list[MessageStreamEvent]:
        out = self._close()
        finished = self._finished or ev.Finished(0, "stop")
        reason, sequence = stop_reason_of(finished)
        message = self.message
        message.stop_reason, message.stop_sequence = reason, sequence
        cached = min(usage.cached_tokens or 0, usage.prompt_tokens)
        uncached = usage.prompt_tokens - cached
        message.usage = MessageUsage(
            input_tokens=uncached,
            output_tokens=usage.completion_tokens,
            cache_read_input_tokens=cached,
        )
        out.append(
            MessageDeltaEvent(
                delta=MessageDelta(stop_reason=reason, stop_sequence=sequence),
                usage=MessageDeltaUsage(
                    input_tokens=uncached,
                    output_tokens=usage.completion_tokens,
                    cache_read_input_tokens=cached,
                ),
            )
        )
        out.append(MessageStopEvent())
        self.done = True
        return out


async def message_events(
    events: AsyncIterator[ev.Event], model: str
) -> AsyncGenerator[MessageStreamEvent, None]:
    """The stream events for ``events`` (``message_start`` first, ``message_stop`` last);
    errors raise. Closing it closes ``events``."""
    builder = MessageEventBuilder(model)
    try:
        first = await anext(events, None)  # an engine's first Started knows the prompt's size
        if isinstance(first, ev.Started) and first.prompt_tokens is not None:
            usage = builder.message.usage
            usage.input_tokens = first.prompt_tokens - first.cached_tokens
            usage.cache_read_input_tokens = first.cached_tokens
        for out in builder.start():
            yield out
        if first is not None:
            for out in builder.feed(first):
                yield out
        async for event in events:
            for out in builder.feed(event):
                yield out
        if not builder.done:
            raise InternalError("the backend's answer ended without usage")
    finally:
        await _close(events)


async def message_frames(
    events: AsyncGenerator[MessageStreamEvent, None],
) -> AsyncIterator[bytes]:
    """Each event as a named SSE frame (``event: <type>``, ``data: <event>``); a failure is an
    ``event: error`` frame with Anthropic's error body, and the end."""
    try:
        async for event in events:
            yield event_frame(event.type, event.model_dump_json().encode())
    except GatewayError as exc:
        yield _error_frame(exc)
    except Exception:
        log.exception("messages stream failed after headers were sent")
        yield _error_frame(InternalError("internal server error"))
    finally:
        await events.aclose()


def _error_frame(error: GatewayError) -> bytes:
    return event_frame("error", json.dumps(anthropic_error_body(error)).encode())


async def collect_message(events: AsyncIterator[ev.Event], model: str) -> MessageObject:
    """Fold a backend's events (which end with ``Usage``) into one message; errors raise."""
    builder = MessageEventBuilder(model)
    try:
        async for event in events:
            builder.feed(event)
    finally:
        await _close(events)
    if not builder.done:
        raise InternalError("the backend's answer ended without usage")
    return builder.message


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def tool_use_id(call_id: str | None) -> str:
    """A tool call's id as Anthropic spells them (``toolu_…``): an engine's ``call_…`` id gets
    Anthropic's prefix; another id (an upstream's) stays as it is; none gets a fresh one. The
    client sends it back as it got it, so nothing maps it back."""
    if not call_id:
        return f"toolu_{secrets.token_hex(12)}"
    if call_id.startswith("call_"):
        return "toolu_" + call_id.removeprefix("call_")
    return call_id
