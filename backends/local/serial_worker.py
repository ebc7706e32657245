"""Run a non-thread-safe engine on one dedicated thread, behind a bounded FIFO wait queue.

``SerialWorker.stream(produce)`` admits the call (or raises ``QueueFullError`` at once when
``max_queue`` callers already wait), waits its turn in FIFO order, then runs the blocking
generator ``produce(stop)`` on the worker thread and relays what it yields through a
``ThreadBridge``. Closing the async iterator sets ``stop``; a producer checks it between
tokens, and a caller cancelled while still queued never starts at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from backends.errors import BackendUnavailableError, QueueFullError
from backends.local.bridge import StopSignal, ThreadBridge

T = TypeVar("T")


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
        self._closed = False

    @property
    def waiting(self) -> int:
        """Callers admitted but not yet running."""
        return self._waiting

    def _lock(self) -> asyncio.Lock:
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    def close(self) -> None:
        """Admit no more streams; those still waiting get ``BackendUnavailableError`` when
        their turn comes. The running one finishes; ``run`` still works (to free the model)."""
        self._closed = True

    def _unloaded(self) -> BackendUnavailableError:
        return BackendUnavailableError(f"model '{self._name}' was unloaded", retry_after=5)

    async def _acquire_turn(self) -> None:
        lock = self._lock()
        if self._closed:
            raise self._unloaded()
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
        if self._closed:
            lock.release()
            raise self._unloaded()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread in turn (no queue limit: for lifecycle work)."""
        async with self._lock():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn)

    async def stream(
        self, produce: Callable[[StopSignal], Generator[T, None, None]]
    ) -> AsyncGenerator[T, None]:
        """Yield what ``produce`` yields on the worker thread; see the module docstring."""
        await self._acquire_turn()
        lock = self._lock()
        bridge: ThreadBridge[T] = ThreadBridge()

        def run() -> None:
            items = produce(bridge.stop)
            try:
                for item in items:
                    bridge.put(item)
                    if bridge.stop.is_set():
                        break
            except BaseException as exc:
                bridge.fail(exc)
            else:
                bridge.close()
            finally:
                items.close()  # run the producer's cleanup now, on this thread

        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, run)
        except BaseException:
            lock.release()
            raise
        # The turn ends when the producer returns, not when the consumer has read everything.
        future.add_done_callback(lambda _: lock.release())
        items = bridge.items()
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
