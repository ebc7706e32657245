"""Graceful shutdown: on SIGTERM stop accepting, let the answers in flight finish for up to
``server.drain_seconds``, then end what is left, unload the models and exit 0.

- ``draining_server`` (the CLI's uvicorn server) calls ``Drain.begin`` when uvicorn starts its
  shutdown: the listening sockets are closed (new connections are refused), idle keep-alive
  connections closed, and uvicorn waits for the requests in flight.
- ``gateway.middleware.RequestMiddleware`` tracks every request's task here (``Drain.enter``,
  ``leave``). While draining, a request that still arrives (on a kept-alive connection) is
  answered 503 at once. At the deadline (``Drain.expire``) every request still running is
  cancelled: one whose response has not started is answered 503 ``server_shutting_down`` in its
  surface's envelope (``answer_cut_off``); a stream that is
  waiting for its backend gets ``ServerShuttingDownError`` raised where it reads the backend
  (``cut_off_error``, in ``gateway.metered_backend``), so each surface ends it as it ends any
  failed stream: an error frame and ``data: [DONE]`` (OpenAI), its error event (Responses,
  Anthropic), an ``{"error"}`` line (Ollama). Then the requests end, the lifespan unloads the
  engines, and ``run_server`` returns (uvicorn re-raises the SIGTERM it handled; here that
  signal is ignored so that the exit status is 0).
- A second Ctrl-C or SIGTERM while draining expires the drain at once (the same cut-off, then
  the same unload and exit 0); a third is uvicorn's force quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
from types import FrameType
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from backends.errors import BackendUnavailableError
from gateway.errors import error_response

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

_DRAIN: contextvars.ContextVar[Drain | None] = contextvars.ContextVar("llmgate_drain", default=None)
_CUT = "llmgate: the shutdown drain time is up"
GRACE_SECONDS = 5.0  # uvicorn's own limit past the drain, should a request not end when cut


class ServerShuttingDownError(BackendUnavailableError):
    """503: the server is shutting down. Not retryable here (no fallback on this server);
    a client or load balancer retries on another instance."""

    default_code = "server_shutting_down"
    retryable = False

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another instance")


class Drain:
    """The server's shutdown, as requests see it. ``begin`` (on the event loop) starts the
    drain; ``expire`` (``seconds`` later, or called by a test) cuts off what still runs."""

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._running: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()

    def begin(self, seconds: float) -> asyncio.TimerHandle | None:
        """Start draining; ``expire`` runs after ``seconds``. Idempotent."""
        if self.draining:
            return None
        self.draining = True
        log.info("draining: %d request(s) in flight, %.0fs to finish", len(self._running), seconds)
        return asyncio.get_running_loop().call_later(seconds, self.expire)

    def expire(self, why: str = "drain time is up") -> None:
        """Cut off every request still running (see the module docstring)."""
        self.draining = self.expired = True
        if self._running:
            log.warning("%s: ending %d request(s)", why, len(self._running))
        for task in list(self._running):
            self._cut.add(task)
            task.cancel(msg=_CUT)

    def enter(self, task: asyncio.Task[object]) -> None:
        self._running.add(task)

    def leave(self, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        self._cut.discard(task)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def was_cut(self, task: asyncio.Task[object]) -> bool:
        return task in self._cut


def cut_off_error() -> ServerShuttingDownError | None:
    """Called where a ``CancelledError`` was caught while reading a backend: if it is the
    drain cutting this request off, undo the cancellation and return the error to raise in
    its place (the surface then ends the stream in its own format); else None (re-raise)."""
    drain = _DRAIN.get()
    task = asyncio.current_task()
    if drain is None or task is None or not drain.was_cut(task) or not task.cancelling():
        return None
    task.uncancel()
    return ServerShuttingDownError()


def set_current_drain(drain: Drain) -> contextvars.Token[Drain | None]:
    """Make ``drain`` the one ``cut_off_error`` asks in this context (undo with
    ``reset_current_drain``)."""
    return _DRAIN.set(drain)


def reset_current_drain(token: contextvars.Token[Drain | None]) -> None:
    _DRAIN.reset(token)


async def refuse_while_draining(scope: Scope, receive: Receive, send: Send) -> None:
    """The 503 for a request that arrives while the server drains."""
    await error_response(ServerShuttingDownError(), scope["path"])(scope, receive, send)


async def answer_cut_off(
    scope: Scope, receive: Receive, send: Send, started: bool, ended: bool
) -> None:
    """A request cut off where no surface could answer: a 503 if nothing was sent yet, else
    the end of the body (a stream cut while writing: no frame can be added safely)."""
    with contextlib.suppress(Exception):
        if not started:
            await error_response(ServerShuttingDownError(), scope["path"])(scope, receive, send)
        elif not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def draining_server(config: uvicorn.Config, drain_seconds: float) -> uvicorn.Server:
    """A uvicorn server that drains its app's ``app.state.drain`` (``install_lifecycle``) for
    ``drain_seconds`` when it shuts down (give ``config`` a ``timeout_graceful_shutdown`` of
    ``drain_seconds + GRACE_SECONDS``)."""
    import uvicorn

    state = getattr(config.app, "state", None)
    drain: Drain = getattr(state, "drain", None) or Drain()

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
            drain.begin(drain_seconds)
            await super().shutdown(sockets)  # type: ignore[arg-type]

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # A second Ctrl-C (or SIGTERM) while draining: stop waiting and end what runs now,
            # each request in its surface's way, then unload and exit as after the drain. Only
            # a further one is uvicorn's force quit (which skips the unload).
            if self.should_exit and not drain.expired:
                with contextlib.suppress(RuntimeError):  # no loop runs: let uvicorn handle it
                    loop = asyncio.get_running_loop()
                    loop.call_soon_threadsafe(drain.expire, "asked again to stop")
                    return
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def run_server(server: uvicorn.Server) -> None:
    """``server.run()`` until SIGTERM or Ctrl-C has drained it; returns normally for both
    (uvicorn re-raises the signal it handled once it has shut down)."""
    previous = signal.signal(signal.SIGTERM, _after_shutdown)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _after_shutdown(signum: int, frame: FrameType | None) -> None:
    """SIGTERM re-raised by uvicorn after a graceful shutdown: nothing left to do."""
