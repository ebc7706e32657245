"""The model lifecycle as the request in hand sees it (``gateway.lifecycle`` is the manager):
which ``ModelLifecycle`` serves it (``RequestMiddleware`` sets the app's for each request),
how long its lease waited for a model to load (Ollama's ``load_duration``), and which models'
``keep_alive`` it set. Context variables: each request task has its own."""

from __future__ import annotations

import contextvars
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

from backends.protocol import Backend

if TYPE_CHECKING:
    from gateway.lifecycle import ModelLifecycle

# nanoseconds the request being served waited for its model to load (Ollama's load_duration)
_LOAD_WAIT_NS: contextvars.ContextVar[int] = contextvars.ContextVar("llmgate_load_wait", default=0)

# the models whose keep_alive this request set (set_keep_alive; the lease reads it)
_KEPT_ALIVE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "llmgate_kept_alive", default=frozenset()
)

_LIFECYCLE: contextvars.ContextVar[ModelLifecycle | None] = contextvars.ContextVar(
    "llmgate_lifecycle", default=None
)


def current_lifecycle() -> ModelLifecycle | None:
    """The app's lifecycle, in a request (None: not installed, e.g. a library user's app)."""
    return _LIFECYCLE.get()


def load_wait_ns() -> int:
    """Nanoseconds this request's lease waited for its model to load (0: it was loaded)."""
    return _LOAD_WAIT_NS.get()


def set_load_wait(ns: int) -> None:
    _LOAD_WAIT_NS.set(ns)


def kept_alive() -> frozenset[str]:
    """The models whose ``keep_alive`` this request set."""
    return _KEPT_ALIVE.get()


def keep_alive_set(name: str) -> None:
    _KEPT_ALIVE.set(_KEPT_ALIVE.get() | {name})


def leased(backend: Backend) -> AbstractAsyncContextManager[None]:
    """``ModelLifecycle.lease`` of the request's app; nothing where none is installed."""
    lifecycle = _LIFECYCLE.get()
    return lifecycle.lease(backend) if lifecycle is not None else nullcontext()


def set_current_lifecycle(
    lifecycle: ModelLifecycle,
) -> contextvars.Token[ModelLifecycle | None]:
    """Make ``lifecycle`` the one ``leased`` uses in this context (``RequestMiddleware`` sets
    the app's, ``app.state.lifecycle``, for each request; undo with ``reset_current_lifecycle``).
    The request has set no ``keep_alive`` yet."""
    _KEPT_ALIVE.set(frozenset())
    return _LIFECYCLE.set(lifecycle)


def reset_current_lifecycle(token: contextvars.Token[ModelLifecycle | None]) -> None:
    _LIFECYCLE.reset(token)
