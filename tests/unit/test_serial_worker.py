"""SerialWorker: one job at a time, FIFO, bounded queue, stop on close, cancel while queued."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from backends.errors import BackendUnavailableError, QueueFullError
from backends.local.bridge import StopSignal
from backends.local.serial_worker import SerialWorker

pytestmark = pytest.mark.anyio


def counting_producer(counter: list[int], limit: int = 10_000, delay: float = 0.002):
    def produce(stop: StopSignal):
        for i in range(limit):
            if stop.is_set():
                return
            time.sleep(delay)
            counter.append(i)
            yield i

    return produce


async def test_closing_the_stream_stops_the_producer_within_a_step():
    worker = SerialWorker("t", max_queue=4)
    produced: list[int] = []
    stream = worker.stream(counting_producer(produced))
    async for item in stream:
        if item == 5:
            break
    await stream.aclose()
    await asyncio.sleep(0.05)
    at_close = len(produced)
    await asyncio.sleep(0.1)
    assert len(produced) == at_close
    assert at_close <= 5 + 3
    worker.shutdown()


async def test_full_queue_is_rejected_at_once():
    worker = SerialWorker("t", max_queue=1)
    release = threading.Event()

    def blocking(stop: StopSignal):
        release.wait(5)
        yield "done"

    async def consume():
        return [x async for x in worker.stream(blocking)]

    running = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    with pytest.raises(QueueFullError) as info:
        await consume()
    assert time.perf_counter() - started < 0.1
    assert info.value.retry_after is not None
    release.set()
    assert await running == ["done"]
    assert await waiting == ["done"]
    worker.shutdown()


async def test_jobs_run_in_arrival_order():
    worker = SerialWorker("t", max_queue=8)
    order: list[int] = []

    def job(n: int):
        def produce(stop: StopSignal):
            time.sleep(0.01)
            order.append(n)
            yield n

        return produce

    async def consume(n: int):
        return [x async for x in worker.stream(job(n))]

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(consume(n)))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    worker.shutdown()


async def test_cancelled_while_queued_never_runs():
    worker = SerialWorker("t", max_queue=8)
    release = threading.Event()
    ran: list[str] = []

    def first(stop: StopSignal):
        release.wait(5)
        ran.append("first")
        yield 1

    def second(stop: StopSignal):
        ran.append("second")
        yield 2

    async def consume(producer):
        return [x async for x in worker.stream(producer)]

    a = asyncio.create_task(consume(first))
    await asyncio.sleep(0.02)
    b = asyncio.create_task(consume(second))
    await asyncio.sleep(0.02)
    assert worker.waiting == 1
    b.cancel()
    await asyncio.sleep(0.01)
    assert worker.waiting == 0
    release.set()
    await a
    await asyncio.sleep(0.05)
    assert ran == ["first"]
    worker.shutdown()


async def test_producer_exception_reaches_the_consumer_and_frees_the_turn():
    worker = SerialWorker("t", max_queue=2)

    def broken(stop: StopSignal):
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async for _ in worker.stream(broken):
            pass
    assert [x async for x in worker.stream(counting_producer([], limit=2, delay=0))] == [0, 1]
    worker.shutdown()


async def test_after_close_waiters_and_newcomers_get_a_retryable_503():
    worker = SerialWorker("t", max_queue=4)
    produced: list[int] = []
    running = worker.stream(counting_producer(produced, limit=50))
    assert await anext(running) == 0
    waiting = asyncio.ensure_future(anext(worker.stream(counting_producer([]))))
    await asyncio.sleep(0.02)
    worker.close()
    rest = [item async for item in running]  # the running stream finishes whole
    assert rest[-1] == 49
    with pytest.raises(BackendUnavailableError) as queued:
        await waiting
    assert queued.value.retryable
    with pytest.raises(BackendUnavailableError):
        await anext(worker.stream(counting_producer([])))
    assert await worker.run(lambda: "freed") == "freed"  # lifecycle work still runs
    worker.shutdown()
