"""A backend's events as the Responses API's output: ``ResponseEventBuilder`` turns them into
numbered stream events (README, "Responses"), and the same builder folds a whole answer into
one ``ResponseObject`` (``collect_response``), so both paths build the same output items.

Items follow the events in order of arrival: thinking opens a ``reasoning`` item, text a
``message``, each tool call a ``function_call``; an item is done when an event of another
item arrives or the choice finishes. Only choice 0 exists (``n`` is 1 on this surface).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal

from backends import events as ev
from backends.errors import GatewayError, InternalError
from backends.responses_events import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    LifecycleEvent,
    OutputItemEvent,
    ReasoningDeltaEvent,
    ReasoningDoneEvent,
    ResponseStreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from backends.responses_types import (
    IncompleteDetails,
    ItemStatus,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)
from gateway.responses_items import (
    ItemKind,
    OutputItemDraft,
    new_item_id,
    whole_json,
)
from gateway.sse import event_frame

log = logging.getLogger(__name__)


class ResponseEventBuilder:
    """The stream events of one response, numbered from 0. ``response`` starts as the
    template (the request's echo, ``in_progress``) and collects the output; ``done`` is set
    by the terminal event (``response.completed`` / ``.incomplete`` / ``.failed``), after which
    ``feed`` returns nothing."""

    def __init__(self, template: ResponseObject) -> None:
        self.response = template
        self.done = False
        self._sequence = 0
        self._open: OutputItemDraft | None = None
        self._reason: ev.FinishReason | None = None

    def start(self) -> list[ResponseStreamEvent]:
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def feed(self, event: ev.Event) -> list[ResponseStreamEvent]:
        if self.done:
            return []
        if isinstance(event, ev.TextDelta):
            return self._text("message", event.text)
        if isinstance(event, ev.ReasoningDelta):
            return self._text("reasoning", event.text)
        if isinstance(event, ev.ToolCallDelta):
            return self._call(event)
        if isinstance(event, ev.Finished):
            return self._finish_choice(event.reason)
        if isinstance(event, ev.Usage):
            return self._end(event)
        return []

    def fail(self, error: GatewayError) -> list[ResponseStreamEvent]:
        """An ``error`` event with the error's envelope fields, then ``response.failed``."""
        if self.done:
            return []
        out: list[ResponseStreamEvent] = [
            ErrorEvent(
                sequence_number=self._next(),
                code=error.code,
                message=error.message,
                param=error.param,
            )
        ]
        if self._open is not None:
            self.response.output.append(self._open.wire("incomplete"))
            self._open = None
        self.response.status = "failed"
        self.response.error = ResponseError(code=_failed_code(error), message=error.message)
        out.append(self._lifecycle("response.failed"))
        self.done = True
        return out

    # -- items ---------------------------------------------------------------------------

    def _text(self, kind: ItemKind, text: str) -> list[ResponseStreamEvent]:
        if not text:
            return []
        out: list[ResponseStreamEvent] = []
        if self._open is None or self._open.kind != kind:
            out += self._close("completed")
            out += self._open_item(kind)
        item = self._open
        assert item is not None
        item.pieces.append(text)
        if kind == "reasoning":
            out.append(
                ReasoningDeltaEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=item.output_index,
                    content_index=0,
                    delta=text,
                )
            )
        else:
            out.append(
                TextDeltaEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=item.output_index,
                    content_index=0,
                    delta=text,
                )
            )
        return out

    def _call(self, delta: ev.ToolCallDelta) -> list[ResponseStreamEvent]:
        out: list[ResponseStreamEvent] = []
        item = self._open
        if item is None or item.kind != "function_call" or item.call != delta.call:
            out += self._close("completed")
            out += self._open_item(
                "function_call",
                call=delta.call,
                call_id=delta.id or ev.new_call_id(),
                name=delta.name or "",
            )
            item = self._open
            assert item is not None
        if delta.arguments:
            item.pieces.append(delta.arguments)
            out.append(
                ArgumentsDeltaEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=item.output_index,
                    delta=delta.arguments,
                )
            )
        return out

    def _open_item(
        self, kind: ItemKind, call: int = -1, call_id: str = "", name: str = ""
    ) -> list[ResponseStreamEvent]:
        item = OutputItemDraft(
            kind=kind,
            output_index=len(self.response.output),
            id=new_item_id(kind),
            call=call,
            call_id=call_id,
            name=name,
        )
        self._open = item
        out: list[ResponseStreamEvent] = [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=item.output_index,
                item=item.wire("in_progress", whole=False),
            )
        ]
        if kind != "function_call":
            out.append(self._part_event("response.content_part.added", item, whole=False))
        return out

    def _close(self, status: ItemStatus) -> list[ResponseStreamEvent]:
        item = self._open
        if item is None:
            return []
        self._open = None
        out: list[ResponseStreamEvent] = []
        seq = self._next
        if item.kind == "function_call":
            out.append(
                ArgumentsDoneEvent(
                    sequence_number=seq(),
                    item_id=item.id,
                    output_index=item.output_index,
                    name=item.name,
                    arguments=item.text,
                )
            )
        else:
            done = ReasoningDoneEvent if item.kind == "reasoning" else TextDoneEvent
            out.append(
                done(
                    sequence_number=seq(),
                    item_id=item.id,
                    output_index=item.output_index,
                    content_index=0,
                    text=item.text,
                )
            )
            out.append(self._part_event("response.content_part.done", item, whole=True))
        if item.kind == "function_call" and status == "incomplete" and whole_json(item.text):
            status = "completed"  # the call is whole: only the response after it was cut
        whole = item.wire(status)
        self.response.output.append(whole)
        out.append(
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=seq(),
                output_index=item.output_index,
                item=whole,
            )
        )
        return out

    def _part_event(
        self,
        kind: Literal["response.content_part.added", "response.content_part.done"],
        item: OutputItemDraft,
        whole: bool,
    ) -> ContentPartEvent:
        return ContentPartEvent(
            type=kind,
            sequence_number=self._next(),
            item_id=item.id,
            output_index=item.output_index,
            content_index=0,
            part=item.part(whole),
        )

    # -- the end -------------------------------------------------------------------------

    def _finish_choice(self, reason: ev.FinishReason) -> list[ResponseStreamEvent]:
        self._reason = reason
        status: ItemStatus = "incomplete" if reason in ("length", "content_filter") else "completed"
        out = self._close(status)
        if not self.response.output:  # nothing was written: still one (empty) message
            out += self._open_item("message")
            out += self._close(status)
        return out

    def _end(self, usage: ev.Usage) -> list[ResponseStreamEvent]:
        out = self._close("completed")
        response = self.response
        response.usage = ResponseUsage.of(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )
        if self._reason == "length":
            response.status = "incomplete"
            response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        elif self._reason == "content_filter":
            response.status = "incomplete"
            response.incomplete_details = IncompleteDetails(reason="content_filter")
        else:
            response.status = "completed"
            response.completed_at = int(time.time())
        incomplete = response.status == "incomplete"
        out.append(self._lifecycle("response.incomplete" if incomplete else "response.completed"))
        self.done = True
        return out

    def _lifecycle(
        self,
        kind: Literal[
            "response.created",
            "response.in_progress",
            "response.completed",
            "response.incomplete",
            "response.failed",
        ],
    ) -> LifecycleEvent:
        return LifecycleEvent(
            type=kind, sequence_number=self._next(), response=self.response.model_copy(deep=True)
        )

    def _next(self) -> int:
        number = self._sequence
        self._sequence += 1
        return number


def _failed_code(error: GatewayError) -> str:
    """The nearest of the codes the Responses API puts in ``response.error`` (the exact code
    is in the ``error`` event before it)."""
    if error.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if error.status < 500 else "server_error"


async def response_events(
    events: AsyncIterator[ev.Event], template: ResponseObject
) -> AsyncGenerator[ResponseStreamEvent, None]:
    """The stream events for ``events``: ``response.created``, ``response.in_progress``, the
    items', then ``response.completed`` or ``.incomplete``; a failure on the way is an
    ``error`` event and ``response.failed``. Closing it closes ``events``."""
    builder = ResponseEventBuilder(template)
    try:
        for out in builder.start():
            yield out
        try:
            async for event in events:
                for out in builder.feed(event):
                    yield out
            if not builder.done:
                raise InternalError("the backend's answer ended without usage")
        except GatewayError as exc:
            for out in builder.fail(exc):
                yield out
        except Exception:
            log.exception("response stream failed after headers were sent")
            for out in builder.fail(InternalError("internal server error")):
                yield out
    finally:
        await _close(events)


async def response_frames(
    events: AsyncGenerator[ResponseStreamEvent, None],
) -> AsyncIterator[bytes]:
    """Each event as a named SSE frame (``event: <type>``, ``data: <event>``)."""
    try:
        async for event in events:
            yield event_frame(event.type, event.model_dump_json().encode())
    finally:
        await events.aclose()


async def collect_response(
    events: AsyncIterator[ev.Event], template: ResponseObject
) -> ResponseObject:
    """Fold a backend's events (which end with ``Usage``) into one response; errors raise."""
    builder = ResponseEventBuilder(template)
    try:
        async for event in events:
            builder.feed(event)
    finally:
        await _close(events)
    if not builder.done:
        raise InternalError("the backend's answer ended without usage")
    return builder.response


async def _close(events: AsyncIterator[ev.Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
