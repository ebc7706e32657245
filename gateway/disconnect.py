"""A client that goes away stops its request: ``DisconnectWatch`` cancels the request's task
when the client disconnects before the response has ended (while queued, during prefill,
while waiting for a non-streaming answer, mid-stream), so the handler's ``await`` raises, the
backend's stream is closed and the engine stops. ``gateway.middleware.RequestMiddleware``
watches every POST (whose body it has read already) and swallows the cancellation it caused.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import Message, Receive


class DisconnectWatch:
    """Reads the server's ``receive`` in a task of its own from ``start`` to ``stop``; the
    handler reads ``receive`` here instead: ``body`` first, then what the server sent."""

    def __init__(self, receive: Receive, body: Message) -> None:
        self._server_receive = receive
        self._messages: deque[Message] = deque([body])
        self._arrived: asyncio.Future[None] | None = None
        self._task: asyncio.Task[object] | None = None
        self._reader: asyncio.Task[None] | None = None
        self.disconnected = False
        self.response_done = False  # the middleware sets it when the last body message goes

    def start(self, task: asyncio.Task[object] | None) -> None:
        """Cancel ``task`` (the request's) should the client go away before the response is
        done."""
        self._task = task
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def receive(self) -> Message:
        while not self._messages:
            if self.disconnected:
                return {"type": "http.disconnect"}
            if self._arrived is None or self._arrived.done():  # done: a waiter was cancelled
                self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        return self._messages.popleft()

    async def _read(self) -> None:
        while True:
            message = await self._server_receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if not self.response_done and self._task is not None:
                    self._task.cancel()
            else:
                self._messages.append(message)
            arrived, self._arrived = self._arrived, None
            if arrived is not None and not arrived.done():
                arrived.set_result(None)
            if self.disconnected:
                return
