"""The one way in-process engines hand results from their own thread to the event loop.

A ``ThreadBridge`` is made on the loop for one request. The engine thread calls ``put`` for
each item, then ``close`` (or ``fail``); the loop side iterates ``items()``. When the consumer
stops early (the client went away, a task was cancelled), ``stop`` is set and the engine checks
it between tokens, so generation ends within about one decode step.

An engine that serves many requests per decode step collects what each step produced in an
``Outbox`` and hands it all over with one wake-up of the loop (``Outbox.send``), rather than
one per token per request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class StopSignal:
    """Set by the consumer side when it no longer wants results; read by the engine thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


_CLOSED = object()


@dataclass(frozen=True)
class _Many:
    """Several posted values (items, then maybe ``_CLOSED`` or an error), delivered in order."""

    values: list[object]


class ThreadBridge(Generic[T]):
    """See the module docstring. ``put``/``fail``/``close`` may be called from any thread;
    ``items`` is consumed once, on the loop that made the bridge."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.stop = StopSignal()

    def put(self, item: T) -> None:
        self._post(item)

    def fail(self, error: BaseException) -> None:
        self._post(error)

    def close(self) -> None:
        self._post(_CLOSED)

    def put_many(self, items: list[T]) -> None:
        """``put`` each of ``items``, with one wake-up of the loop."""
        if items:
            self._post(_Many(list(items)))

    def _post(self, value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, value)
        except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
            self.stop.set()

    async def items(self) -> AsyncGenerator[T, None]:
        """What the engine puts, until it closes; a failure it reports is raised here. Ending
        this iterator, however it ends, sets ``stop``."""
        try:
            while True:
                value = await self._queue.get()
                for one in value.values if isinstance(value, _Many) else (value,):
                    if one is _CLOSED:
                        return
                    if isinstance(one, BaseException):
                        raise one
                    yield one  # type: ignore[misc]
        finally:
            self.stop.set()


class Outbox(Generic[T]):
    """What one engine step produced for each request, sent to the event loop(s) at once.
    Used by one engine thread; ``send`` empties it."""

    def __init__(self) -> None:
        self._values: dict[ThreadBridge[T], list[object]] = {}

    def put(self, bridge: ThreadBridge[T], item: T) -> None:
        self._values.setdefault(bridge, []).append(item)

    def extend(self, bridge: ThreadBridge[T], items: list[T]) -> None:
        if items:
            self._values.setdefault(bridge, []).extend(items)

    def close(self, bridge: ThreadBridge[T]) -> None:
        self._values.setdefault(bridge, []).append(_CLOSED)

    def fail(self, bridge: ThreadBridge[T], error: BaseException) -> None:
        self._values.setdefault(bridge, []).append(error)

    def send(self) -> None:
        """Deliver everything collected: one ``call_soon_threadsafe`` per event loop."""
        if not self._values:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[ThreadBridge[T], _Many]]] = {}
        for bridge, values in self._values.items():
            by_loop.setdefault(bridge._loop, []).append((bridge, _Many(values)))
        self._values = {}
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
                for bridge, _ in batch:
                    bridge.stop.set()


def _deliver(batch: list[tuple[ThreadBridge[T], _Many]]) -> None:
    for bridge, many in batch:
        bridge._queue.put_nowait(many)
