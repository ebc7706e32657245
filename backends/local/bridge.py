"""The one way in-process engines hand results from their own thread to the event loop.

A ``ThreadBridge`` is made on the loop for one request. The engine thread calls ``put`` for
each item, then ``close`` (or ``fail``); the loop side iterates ``items()``. When the consumer
stops early (the client went away, a task was cancelled), ``stop`` is set and the engine checks
it between tokens, so generation ends within about one decode step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
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
                if value is _CLOSED:
                    return
                if isinstance(value, BaseException):
                    raise value
                yield value  # type: ignore[misc]
        finally:
            self.stop.set()
