"""Run a non-thread-safe engine on one dedicated thread, behind a bounded FIFO wait queue.

``SerialWorker.stream(produce)`` admits the call (or raises ``QueueFullError`` at once when
``max_queue`` callers already wait), waits its turn in FIFO order, then runs the blocking
generator ``produce(stop)`` on the worker thread and relays what it yields to the event loop.
Closing the async iterator — a client that went away, a cancelled task — sets ``stop``; a
producer checks it between tokens, so generation ends within about one decode step, and a
caller cancelled while still queued never starts at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from backends.errors import QueueFullError

T = TypeVar("T")

_ITEM, _DONE, _ERROR = 0, 1, 2


class StopSignal:
    """Set by the consumer side when it no longer wants results; read by the producer."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class SerialWorker:
    """One thread, one job at a time, at most ``max_queue`` jobs waiting.

    ``run`` executes a plain blocking call on the same thread (loading, unloading), also in
    FIFO order. ``shutdown`` stops accepting work and joins the thread.
    """

    def __init__(self, name: str, max_queue: int, retry_after: float = 1.0) -> None:
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self._max_queue = max_queue
        self._retry_after = retry_after
        self._waiting = 0
        self._busy: asyncio.Lock | None = None

    @property
    def waiting(self) -> int:
        """Callers admitted but not yet running."""
        return self._waiting

    def _lock(self) -> asyncio.Lock:
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    async def _acquire_turn(self) -> None:
        lock = self._lock()
        if lock.locked() and self._waiting >= self._max_queue:
            raise QueueFullError(
                f"model '{self._name}' is busy: {self._waiting} requests already wait "
                f"(max_queue={self._max_queue}); retry later",
                retry_after=self._retry_after,
            )
        self._waiting += 1
        try:
            await lock.acquire()
        finally:
            self._waiting -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread in turn (no queue limit: for lifecycle work)."""
        lock = self._lock()
        async with lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn)

    async def stream(self, produce: Callable[[StopSignal], Iterator[T]]) -> AsyncGenerator[T, None]:
        """Yield what ``produce`` yields on the worker thread; see the module docstring."""
        await self._acquire_turn()
        lock = self._lock()
        loop = asyncio.get_running_loop()
        stop = StopSignal()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        def post(kind: int, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
                stop.set()

        def run() -> None:
            items = produce(stop)
            try:
                for item in items:
                    post(_ITEM, item)
                    if stop.is_set():
                        break
            except BaseException as exc:
                post(_ERROR, exc)
            else:
                post(_DONE, None)
            finally:
                close = getattr(items, "close", None)
                if close is not None:  # run the producer's cleanup now, on this thread
                    close()

        try:
            future = loop.run_in_executor(self._executor, run)
        except BaseException:
            lock.release()
            raise
        # The turn ends when the producer returns, not when the consumer has read everything.
        future.add_done_callback(lambda _: lock.release())
        try:
            while True:
                kind, value = await queue.get()
                if kind == _ITEM:
                    yield value
                elif kind == _ERROR:
                    raise value
                else:
                    return
        finally:
            stop.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
