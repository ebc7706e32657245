"""What one request did, recorded once for every surface: who served it, its status, its tokens
and its timings. Observers (metrics, the request log, token rate limits) read the finished
record; nothing on the hot path formats or exports anything.

``gateway.middleware.RequestMiddleware`` (the one per-request ASGI layer) opens a record per
HTTP request (``open_record``: the ``X-Request-ID`` accepted or generated, echoed by the
middleware), stores the status when the response starts, and closes it when the response has
ended (``close_record``: the end time, then every observer). ``gateway.dispatch.open_first``
fills in the model, backend and replica and meters what the backend produced
(``gateway.metered_backend``). The record of the request being served is reachable as
``current_record()`` (a context variable: the handler runs in the middleware's context).
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from gateway.metered_backend import BackendActivity

log = logging.getLogger(__name__)

_RECORD: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "llmgate_request_record", default=None
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

# Gaps between consecutive outputs are counted into these buckets (upper bounds, seconds) as
# they happen, never kept one by one: 1 ms (a GPU batch of one) to 2 s (a stalled upstream).
GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)


class GapCounts:
    """The gaps between one response's outputs: ``counts[i]`` fell at or under
    ``GAP_BUCKETS[i]`` (above the previous bound), ``counts[-1]`` above them all; ``sum`` in
    seconds; ``len()`` how many."""

    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(GAP_BUCKETS) + 1)
        self.sum = 0.0
        self.total = 0

    def add(self, gap: float) -> None:
        self.counts[bisect_left(GAP_BUCKETS, gap)] += 1
        self.sum += gap
        self.total += 1

    def __len__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        return f"GapCounts(total={self.total}, sum={self.sum:.6f})"


@dataclass
class RequestRecord:
    """One request. Times are ``time.perf_counter()`` seconds; ``None``: did not happen.

    ``model`` is the public name of the model that served it (from config, never the raw
    name a client sent), ``requested`` the name it asked for; ``key_id`` names the API key
    that was used (never the key itself)."""

    request_id: str
    method: str
    path: str
    surface: str
    started: float = field(default_factory=time.perf_counter)
    requested: str | None = None
    model: str | None = None
    backend: str | None = None
    replica: str | None = None
    key_id: str | None = None
    status: int | None = None
    streamed: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # of the prompt tokens, read from a prefix cache
    first_output: float | None = None  # the first token / chunk / vector reached the surface
    last_output: float | None = None
    inter_token: GapCounts = field(default_factory=GapCounts)  # gaps between outputs
    finished: float | None = None
    error_type: str | None = None  # a GatewayError's code, when the request failed
    prompt: str | None = None  # the request body as sent, kept only with server.log_prompts
    activity: BackendActivity | None = field(default=None, repr=False)

    def output(self) -> None:
        """Something was produced (a token, a relayed chunk): time to first, gaps after."""
        now = time.perf_counter()
        last = self.last_output
        if last is not None:  # GapCounts.add, inline: this runs once per token or chunk
            gap = now - last
            gaps = self.inter_token
            gaps.counts[bisect_left(GAP_BUCKETS, gap)] += 1
            gaps.sum += gap
            gaps.total += 1
        elif self.first_output is None:
            self.first_output = now
        self.last_output = now

    def usage(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = None,
    ) -> None:
        """Add a backend's usage (None: it did not say)."""
        if prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + prompt_tokens
        if completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + completion_tokens
        if cached_tokens is not None:
            self.cached_tokens = (self.cached_tokens or 0) + cached_tokens

    @property
    def ttft(self) -> float | None:
        return None if self.first_output is None else self.first_output - self.started

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


RecordObserver = Callable[[RequestRecord], None]


def current_record() -> RequestRecord | None:
    """The record of the request being served in this context (None outside a request)."""
    return _RECORD.get()


def surface_of_path(path: str, method: str = "POST") -> str:
    """A bounded label for the surface a request belongs to (``/``: the chat page when read,
    the tutorial API when posted to)."""
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    for prefix, name in (
        ("/v1/chat/completions", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/responses", "responses"),
        ("/v1/embeddings", "embeddings"),
        ("/v1/models", "models"),
        ("/admin/", "admin"),
    ):
        if path.startswith(prefix):
            return name
    if path == "/":
        return "page" if method in ("GET", "HEAD") else "tutorial"
    if path.startswith("/static/"):
        return "page"
    return "other"


def open_record(scope: Scope, activity: BackendActivity | None = None) -> RequestRecord:
    """The record of the HTTP request ``scope`` (also put in ``scope["state"]["record"]``)."""
    path = scope["path"]
    record = RequestRecord(
        request_id=_request_id(scope),
        method=scope["method"],
        path=path,
        surface=surface_of_path(path, scope["method"]),
        activity=activity,
    )
    scope.setdefault("state", {})["record"] = record
    return record


def set_current_record(record: RequestRecord) -> contextvars.Token[RequestRecord | None]:
    """Make ``record`` this context's ``current_record()`` (undo with ``reset_current_record``)."""
    return _RECORD.set(record)


def reset_current_record(token: contextvars.Token[RequestRecord | None]) -> None:
    _RECORD.reset(token)


def close_record(record: RequestRecord, observers: Sequence[RecordObserver]) -> None:
    """The request has ended: its end time (499 if no response started: the client went away
    first), then every observer. One that raises is logged and never affects the others."""
    record.finished = time.perf_counter()
    if record.status is None:
        record.status = 499
    for observe in observers:
        try:
            observe(record)
        except Exception:
            log.exception("request observer failed")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.match(text):
                return text
    return secrets.token_hex(16)
