"""The HTTP side every upstream backend (Ollama, OpenAI-compatible) shares (the Backend base
class over it is ``backends.upstream.base``): one pooled HTTP client per upstream over its
replicas (``backends.upstream.replicas``), active health checks, deadlines, and retry on
another replica while nothing has reached the client.

``UpstreamClient.open_stream`` picks a replica, sends the request, and returns an
``UpstreamStream`` whose first event has already arrived and which names its replica.
Failures before that point are retried on the next replica when the error class says so
(``backends.errors.may_retry``); what is left raises a ``backends.errors`` exception.

One aiohttp session (its connection pool and cookie jar) per upstream serves both the httpx
client (httpx-aiohttp's transport: health checks and metadata, ``fetch_json``) and, directly,
the generation requests (``request_json``, ``open_stream``), whose answers come back as
``backends.upstream.response.UpstreamResponse``: httpx's objects around aiohttp's cost more
CPU per request than the relay's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from backends.errors import (
    BackendUnavailableError,
    GatewayError,
    QueueFullError,
    UpstreamError,
    may_retry,
)
from backends.protocol import OpenStream
from backends.upstream.replicas import Replica, ReplicaPool
from backends.upstream.response import UpstreamResponse, httpx_error
from backends.upstream.retry_after import upstream_retry_after
from backends.upstream.settings import UpstreamSettings
from backends.upstream.transport import TRANSPORT_ERRORS, map_transport_errors

log = logging.getLogger(__name__)

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A JSON object an upstream answered: parsed, its bytes as sent, and who answered."""

    data: dict[str, Any]
    raw: bytes
    replica: Replica


@dataclass
class Deadline:
    """The total deadline of one request; ``window(limit)`` is the time left for one wait."""

    total: float
    started: float = field(default_factory=time.monotonic)

    def window(self, limit: float) -> float:
        return max(0.0, min(limit, self.started + self.total - time.monotonic()))

    def passed(self) -> bool:
        return time.monotonic() >= self.started + self.total


class UpstreamStream(OpenStream[E]):
    """An open upstream response whose first event is ``first``; ``replica`` is the URL that
    serves it. Iterate for the rest; ``aclose`` drops the connection at once and gives the
    replica's in-flight slot back, read or not."""

    def __init__(
        self,
        replica: Replica,
        response: UpstreamResponse,
        events: AsyncIterator[E],
        first: E,
        release: Callable[[], None],
    ) -> None:
        async def drop_connection() -> None:
            try:
                await response.aclose()
            finally:
                release()

        super().__init__(events, replica=replica.url, cleanup=drop_connection)
        self.first = first
        self.events = events  # iterated as is where each event counts (``UpstreamBackend.items``)


class UpstreamClient:
    """Pooled HTTP access to one upstream model's replicas (see the module docstring).

    ``start`` creates the client and the health-check task; ``aclose`` ends both.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        health_path: str,
        map_status: Callable[[int, bytes], GatewayError],
    ) -> None:
        self.settings = settings
        self.pool = ReplicaPool(
            list(settings.base_url), settings.failure_threshold, settings.cooldown
        )
        self._health_path = health_path
        self._map_status = map_status
        self._client: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._post_headers: dict[str, str] = {}
        self._timeout = self._whole_timeout = aiohttp.ClientTimeout()
        self._health_task: asyncio.Task[None] | None = None
        self._in_flight = 0

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def in_flight(self) -> int:
        """Requests holding an open upstream stream (counted against ``max_in_flight``)."""
        return self._in_flight

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client, self._session = _make_client(self.settings)
        # The httpx client's headers, so that upstreams see what they saw before; but the
        # encodings are aiohttp's, which decompresses the answers itself.
        headers = {k: v for k, v in self._client.headers.items() if k != "accept-encoding"}
        self._post_headers = {**headers, "content-type": "application/json", **self.headers()}
        # httpx-aiohttp's reading of the client's timeouts: pool -> connect, connect ->
        # sock_connect, read (the idle deadline between a stream's chunks) -> sock_read
        timeouts = self.settings.timeouts
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.connect, sock_read=timeouts.idle, connect=timeouts.first_byte
        )
        # a whole (non-streamed) answer sends nothing until it is done: only `total` bounds it
        self._whole_timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.connect, sock_read=None, connect=timeouts.first_byte
        )
        if self.settings.health_check_interval > 0:
            self._health_task = asyncio.create_task(self._health_loop())

    async def aclose(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        self._session = None
        if client is not None:
            await client.aclose()  # closes the session too (its transport's)

    def headers(self) -> dict[str, str]:
        if self.settings.api_key:
            return {"Authorization": f"Bearer {self.settings.api_key}"}
        return {}

    async def check(self, replica: Replica) -> bool:
        client = self._require_client()
        try:
            reply = await client.get(
                replica.url + self._health_path,
                headers=self.headers(),
                timeout=self.settings.timeouts.connect,
            )
            return reply.status_code < 500
        except TRANSPORT_ERRORS:
            return False

    async def _health_loop(self) -> None:
        while True:
            for replica in self.pool.replicas:
                self.pool.record_health(replica, await self.check(replica))
            await asyncio.sleep(self.settings.health_check_interval)

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise BackendUnavailableError(
                f"model '{self.settings.name}' is not started", retry_after=1
            )
        return self._client

    async def fetch_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Metadata (not a generation) from the first replica that answers, available ones
        first: no in-flight slot, no failure recorded. Before ``start`` it goes through a
        client of its own, so asking does not start this one. The caller bounds the time.
        Raises ``GatewayError`` (an error status, a body that is not JSON) or the last
        transport error."""
        now = time.monotonic()
        replicas = sorted(self.pool.replicas, key=lambda r: not r.available(now))
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            last: BaseException | None = None
            for replica in replicas:
                try:
                    reply = await client.request(
                        method, replica.url + path, json=body, headers=self.headers()
                    )
                except TRANSPORT_ERRORS as exc:
                    last = exc
                    continue
                if reply.status_code >= 400:
                    error = self._map_status(reply.status_code, reply.content)
                    raise upstream_retry_after(error, reply.headers.get("retry-after"))
                try:
                    return reply.json()
                except ValueError as exc:
                    raise UpstreamError("the upstream sent a body that is not JSON") from exc
            raise last or BackendUnavailableError(f"model '{self.settings.name}' has no replica")

    async def post(
        self, url: str, body: dict[str, Any], sockets: aiohttp.ClientTimeout | None = None
    ) -> UpstreamResponse:
        """POST ``body`` as JSON to ``url``: the answer once its headers have arrived (read or
        close it); ``sockets``: the socket deadlines, by default a stream's (the read timeout is
        the idle deadline between chunks). Raises httpx's transport errors, as httpx-aiohttp
        does."""
        session = self._session
        if session is None:
            self._require_client()  # raises
            raise AssertionError("a started client has a session")
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        deadlines = sockets or self._timeout
        try:
            try:
                response = await self._send(session, url, data, deadlines)
            except aiohttp.ServerDisconnectedError:
                # Closed without a word: most likely a pooled connection the upstream closed as
                # it was reused (its idle keep-alive ran out). Once more, on a new connection
                # (the pool dropped the closed one), as aiohttp does for idempotent methods.
                response = await self._send(session, url, data, deadlines)
        except Exception as exc:
            raise httpx_error(exc)  # noqa: B904 (chained from exc already)
        return UpstreamResponse(response)

    async def _send(
        self, session: aiohttp.ClientSession, url: str, data: bytes, sockets: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        return await session.request(
            "POST",
            url,
            data=data,
            headers=self._post_headers,
            timeout=sockets,
            allow_redirects=False,
        )

    async def request_json(self, path: str, body: dict[str, Any], deadline: Deadline) -> JsonReply:
        """A non-streaming POST, retried on another replica on a retryable failure; returns the
        reply (a JSON object) and the replica that gave it."""

        async def attempt(replica: Replica) -> JsonReply:
            async with asyncio.timeout(deadline.window(deadline.total)):
                reply = await self.post(replica.url + path, body, self._whole_timeout)
                try:
                    raw = await reply.aread()
                finally:
                    await reply.aclose()
                if reply.status_code >= 400:
                    error = self._map_status(reply.status_code, raw)
                    raise upstream_retry_after(error, reply.retry_after)
                try:
                    data = json.loads(raw)
                except ValueError as exc:
                    raise UpstreamError("the upstream sent a body that is not JSON") from exc
                if not isinstance(data, dict):
                    raise UpstreamError("the upstream sent an unexpected JSON body")
                return JsonReply(data, raw, replica)

        return await self._with_replicas(attempt)

    async def open_stream(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[AsyncIterator[bytes]], AsyncIterator[E]],
        deadline: Deadline,
    ) -> UpstreamStream[E]:
        """POST ``body`` and wait for the first event ``parse`` makes of the answer's lines,
        retrying on another replica."""

        async def attempt(replica: Replica) -> UpstreamStream[E]:
            response: UpstreamResponse | None = None
            try:
                async with asyncio.timeout(deadline.window(self.settings.timeouts.first_byte)):
                    # the client's timeouts: the read timeout is the idle deadline between chunks
                    response = await self.post(replica.url + path, body)
                    if response.status_code >= 400:
                        error = self._map_status(response.status_code, await response.aread())
                        raise upstream_retry_after(error, response.retry_after)
                    events = parse(response.lines())
                    first = await anext(events)
            except StopAsyncIteration as exc:
                assert response is not None
                await response.aclose()
                raise UpstreamError("the upstream closed the stream without a reply") from exc
            except BaseException:
                if response is not None:
                    await response.aclose()
                raise
            replica.in_flight += 1
            self._in_flight += 1

            def release() -> None:
                replica.in_flight -= 1
                self._in_flight -= 1

            return UpstreamStream(replica, response, events, first, release)

        return await self._with_replicas(attempt)

    async def _with_replicas(self, attempt: Callable[[Replica], Awaitable[R]]) -> R:
        if self._in_flight >= self.settings.max_in_flight:
            raise QueueFullError(
                f"model '{self.settings.name}' has {self._in_flight} requests in flight "
                f"(max_in_flight={self.settings.max_in_flight}); retry later",
                retry_after=1,
            )
        tried: set[str] = set()
        last: GatewayError | None = None
        while True:
            replica = self.pool.choose(exclude=tried)
            if replica is None:
                break
            tried.add(replica.url)
            try:
                result = await map_transport_errors(self.settings.name, attempt(replica))
            except GatewayError as exc:
                if not may_retry(exc):
                    self.pool.record_success(replica)  # the upstream works; the request was bad
                    raise
                if exc.replica_fault:
                    self.pool.record_failure(replica)
                log.info("model %s: replica %s failed: %s", self.settings.name, replica.url, exc)
                last = exc
                continue
            self.pool.record_success(replica)
            return result
        if last is not None:
            raise last
        raise BackendUnavailableError(
            f"model '{self.settings.name}': every upstream replica is down or cooling down",
            retry_after=max(1.0, self.settings.cooldown / 2),
        )


def _make_client(settings: UpstreamSettings) -> tuple[httpx.AsyncClient, aiohttp.ClientSession]:
    """The pooled httpx client and the aiohttp session under its transport (the one
    httpx-aiohttp would make for these limits)."""
    limits = httpx.Limits(
        max_connections=settings.max_connections * len(settings.base_url),
        max_keepalive_connections=settings.max_connections,
    )
    timeout = httpx.Timeout(
        connect=settings.timeouts.connect,
        read=settings.timeouts.idle,  # also the idle deadline between a stream's chunks
        write=settings.timeouts.connect,
        pool=settings.timeouts.first_byte,
    )
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0,
        keepalive_timeout=limits.keepalive_expiry,
        ssl=httpx.create_ssl_context(),
    )
    session = aiohttp.ClientSession(connector=connector)
    transport = AiohttpTransport(limits=limits, client=session)
    return httpx.AsyncClient(transport=transport, timeout=timeout), session
