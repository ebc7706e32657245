"""``RequestMiddleware``: the one pure-ASGI layer every HTTP request passes through (never
Starlette's BaseHTTPMiddleware: it hides client disconnects), with one wrapper of ``send``.

Each concern keeps its logic in its own module; this layer calls them in this order, each
inside the one before:

1. the request record (``gateway.request_record``): opened, the ``X-Request-ID`` echoed, the
   status noted when the response starts; closed when the response has ended (observers);
2. the request's clock and limits, and a body over ``server.max_body_bytes`` answered 413
   (``gateway.limits``); a JSON body sent as a form (``curl -d``) read as JSON, one escaping
   a lone UTF-16 surrogate answered 400 (``gateway.json_body``);
3. the API key: 401 without a configured one on the routes that need it
   (``gateway.api_keys``);
4. the key's rate limits, for a POST to a model route when limits are configured: 429 when
   spent, the ``x-ratelimit-*`` headers at response start, tokens charged after the response
   (``gateway.rate_limits``);
5. for a POST, cancelling the handler when the client goes away (``gateway.disconnect``);
6. the shutdown drain: 503 while draining, the request's task tracked and, when the drain
   time is up, cut off (``gateway.shutdown``);
7. the app's model lifecycle made the request's (``gateway.request_models``);
8. ``HEAD`` answered on every ``GET`` route (``gateway.head``).

Folding them into one layer costs one coroutine call per response message instead of one per
layer (bench/passthrough.py: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.errors import InternalError
from gateway import (
    api_keys,
    disconnect,
    json_body,
    limits,
    rate_limits,
    request_models,
    request_record,
    shutdown,
)
from gateway.config import ApiKey
from gateway.errors import error_response
from gateway.head import HeadAsGet
from gateway.metered_backend import BackendActivity
from gateway.rate_limits import Admission, RateLimiter
from gateway.request_record import RecordObserver, RequestRecord

log = logging.getLogger(__name__)


class RequestMiddleware:
    """See the module docstring. ``observers`` is read when each request ends (appending to it
    later is seen); ``limiter`` may be None (no rate limits)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        observers: Sequence[RecordObserver],
        activity: BackendActivity | None,
        limits: limits.RequestLimits,
        keys: Sequence[ApiKey],
        limiter: RateLimiter | None,
        drain: shutdown.Drain,
    ) -> None:
        self.app = HeadAsGet(app)
        self.observers = observers
        self.activity = activity
        self.limits = limits
        self.keys = list(keys)
        self.limiter = limiter
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = request_record.open_record(scope, self.activity)
        response = _Response(send, record)
        record_token = request_record.set_current_record(record)
        try:
            budget_token = limits.start_budget(self.limits)
            try:
                await self._admitted(scope, receive, response)
            except Exception:
                if response.started:  # nothing left to answer with: the server ends it
                    raise
                await self._failed(scope, receive, response)
            finally:
                limits.reset_budget(budget_token)
        finally:
            request_record.reset_current_record(record_token)
            request_record.close_record(record, self.observers)

    @staticmethod
    async def _failed(scope: Scope, receive: Receive, response: _Response) -> None:
        """A bug before the response started: answered here, through ``response``, so the
        500 carries the request's id and its record says 500 (outside this layer it would
        be recorded as a client that went away)."""
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        response.record.error_type = InternalError.default_code
        error = InternalError("internal server error")
        await error_response(error, scope["path"])(scope, receive, response)

    async def _admitted(self, scope: Scope, receive: Receive, response: _Response) -> None:
        """Steps 2 to 4: the body within its limit, the key, the key's rate limits."""
        body: Message | None = None
        if scope["method"] in limits.BODY_METHODS:
            body = await limits.read_body(self.limits, scope, receive, response)
            if body is None:
                return
            json_body.read_as_json(scope, body)
            not_text = json_body.lone_surrogate(body)
            if not_text is not None:
                await error_response(not_text, scope["path"])(scope, receive, response)
                return
        refusal = api_keys.authenticate(self.keys, scope)
        if refusal is not None:
            await error_response(refusal, scope["path"])(scope, receive, response)
            return
        limiter = self.limiter
        if limiter is None or not limiter.counts(scope):
            await self._watched(scope, receive, body, response)
            return
        admission, refused = await limiter.open_admission(scope.get("state", {}).get("key_id"))
        response.admission = admission
        admission_token = rate_limits.set_current_admission(admission)
        try:
            if refused is not None:
                await rate_limits.refuse(refused, scope, receive, response)
                return
            completed = False
            try:
                await self._watched(scope, receive, body, response)
                completed = True
            finally:
                await limiter.close_admission(admission, completed)
        finally:
            rate_limits.reset_current_admission(admission_token)

    async def _watched(
        self, scope: Scope, receive: Receive, body: Message | None, response: _Response
    ) -> None:
        """Step 5: a POST's handler is cancelled when the client goes away."""
        if body is None:
            await self._served(scope, receive, response)
            return
        if scope["method"] != "POST":
            await self._served(scope, limits.replaying(body, receive), response)
            return
        watch = disconnect.DisconnectWatch(receive, body)
        response.watch = watch
        watch.start(asyncio.current_task())
        try:
            await self._served(scope, watch.receive, response)
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            # The client is gone: the handler was cancelled on purpose; nothing to answer.
            _uncancel()
        finally:
            watch.stop()

    async def _served(self, scope: Scope, receive: Receive, response: _Response) -> None:
        """Steps 6 and 7: the drain, the lifecycle, then the app."""
        task = asyncio.current_task()
        if task is None:
            await self.app(scope, receive, response)
            return
        drain = self.drain
        if drain.draining:
            await shutdown.refuse_while_draining(scope, receive, response)
            return
        drain.enter(task)
        drain_token = shutdown.set_current_drain(drain)
        try:
            models = getattr(scope["app"].state, "lifecycle", None) if "app" in scope else None
            if models is None:
                await self.app(scope, receive, response)
                return
            lifecycle_token = request_models.set_current_lifecycle(models)
            try:
                await self.app(scope, receive, response)
            finally:
                request_models.reset_current_lifecycle(lifecycle_token)
        except asyncio.CancelledError:
            if not drain.was_cut(task):
                raise
            task.uncancel()
            await shutdown.answer_cut_off(
                scope, receive, response, response.started, response.ended
            )
        finally:
            shutdown.reset_current_drain(drain_token)
            drain.leave(task)


class _Response:
    """The one wrapper of the server's ``send``: notes the status in the record, adds the rate
    limits' headers and the request's id to the start (``X-Request-ID``, which the openai SDK
    reads, and ``request-id``, which the anthropic SDK reads), and tells the disconnect watch
    and the drain how far the response got."""

    __slots__ = ("admission", "ended", "record", "request_id", "send", "started", "watch")

    def __init__(self, send: Send, record: RequestRecord) -> None:
        self.send = send
        self.record = record
        request_id = record.request_id.encode()
        self.request_id = ((b"x-request-id", request_id), (b"request-id", request_id))
        self.admission: Admission | None = None
        self.watch: disconnect.DisconnectWatch | None = None
        self.started = False
        self.ended = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not message.get("more_body", False):
                self.ended = True
                if self.watch is not None:
                    self.watch.response_done = True
        elif kind == "http.response.start":
            self.started = True
            self.record.status = message["status"]
            headers = [*message.get("headers", [])]
            if self.admission is not None:
                headers += self.admission.headers()
            headers += self.request_id
            message = {**message, "headers": headers}
        await self.send(message)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling():
            task.uncancel()
