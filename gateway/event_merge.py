"""Several generations served as one answer (a completions request with a list of prompts):
start them together, then read their events as one stream.

``open_all`` starts every request on one backend concurrently (an engine that batches runs them
together); if one fails to start, the others are closed and the failure is raised.
``merge_events`` interleaves their events as they arrive, renumbering choices (request ``i``'s
choice ``j`` becomes ``i * n + j``) and summing their usage into one ``Usage`` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from backends import events as ev
from backends.protocol import Backend, EventStream
from backends.requests import GenerationRequest

_END = object()


async def open_all(backend: Backend, requests: list[GenerationRequest]) -> list[EventStream]:
    """``backend.generate`` for each request, concurrently; all started, or none left open."""
    if len(requests) == 1:
        return [await backend.generate(requests[0])]
    results = await asyncio.gather(*(backend.generate(r) for r in requests), return_exceptions=True)
    streams = [r for r in results if not isinstance(r, BaseException)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for stream in streams:
            await stream.aclose()
        raise failure
    return streams


async def merge_events(streams: list[EventStream], n: int) -> AsyncIterator[ev.Event]:
    """The events of ``streams`` as one stream (see the module docstring). The first failure
    of any stream is raised; closing this closes every stream."""
    if len(streams) == 1:
        try:
            async for event in streams[0]:
                yield event
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    prompt_tokens = completion_tokens = 0
    cached_tokens: int | None = None
    try:
        running = len(streams)
        while running:
            source, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif isinstance(item, ev.Usage):
                prompt_tokens += item.prompt_tokens
                completion_tokens += item.completion_tokens
                if item.cached_tokens is not None:
                    cached_tokens = (cached_tokens or 0) + item.cached_tokens
            else:
                yield _renumbered(item, source * n)  # type: ignore[arg-type]
        yield ev.Usage(prompt_tokens, completion_tokens, cached_tokens)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for stream in streams:
            await stream.aclose()


async def _pump(source: int, stream: EventStream, queue: asyncio.Queue[tuple[int, object]]) -> None:
    try:
        async for event in stream:
            queue.put_nowait((source, event))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        queue.put_nowait((source, exc))
        return
    queue.put_nowait((source, _END))


def _renumbered(event: ev.Event, offset: int) -> ev.Event:
    if offset == 0 or isinstance(event, ev.Usage):
        return event
    return dataclasses.replace(event, index=event.index + offset)
