"""The engines' hand-off of a step's results (``bridge.Outbox``): everything a step produced for
every request reaches the loop with one wake-up, in order, closes and failures included."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from backends.local.bridge import Outbox, ThreadBridge


async def _drain(bridge: ThreadBridge[str]) -> list[Any]:
    seen: list[Any] = []
    try:
        async for item in bridge.items():
            seen.append(item)
    except RuntimeError as exc:
        seen.append(exc)
    return seen


@pytest.mark.anyio
async def test_one_step_for_three_requests_is_one_wake_up_of_the_loop(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = 0
    original = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    a, b, c = ThreadBridge[str](), ThreadBridge[str](), ThreadBridge[str]()
    boom = RuntimeError("engine failed")

    def engine_step() -> None:
        outbox: Outbox[str] = Outbox()
        outbox.put(a, "a1")
        outbox.extend(b, ["b1", "b2"])
        outbox.extend(c, [])  # nothing for c is nothing sent
        outbox.put(a, "a2")
        outbox.close(a)
        outbox.fail(b, boom)
        outbox.send()
        outbox.send()  # empty now: no second wake-up

    thread = threading.Thread(target=engine_step)
    thread.start()
    thread.join()
    assert calls == 1
    assert await _drain(a) == ["a1", "a2"]
    assert await _drain(b) == ["b1", "b2", boom]
    c.close()
    assert await _drain(c) == []


@pytest.mark.anyio
async def test_a_step_sent_after_the_consumer_left_is_dropped_quietly():
    bridge = ThreadBridge[str]()
    bridge.put("first")
    items = bridge.items()
    assert await items.__anext__() == "first"
    await items.aclose()  # the client went away
    assert bridge.stop.is_set()
    outbox: Outbox[str] = Outbox()
    outbox.put(bridge, "late")
    outbox.close(bridge)
    outbox.send()
    await asyncio.sleep(0)
