"""``UpstreamBackend``: what the upstream backends (Ollama, OpenAI-compatible) share as
Backends — construction, lifecycle, health, capabilities asked once, and opening a stream
over their ``UpstreamClient`` (``backends.upstream.client``) within its deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from backends.errors import BackendTimeoutError, GatewayError, UpstreamError
from backends.model_types import ModelCapabilities
from backends.protocol import Health
from backends.upstream.client import Deadline, UpstreamClient, UpstreamStream
from backends.upstream.settings import UpstreamSettings
from backends.upstream.transport import TRANSPORT_ERRORS, transport_error

log = logging.getLogger(__name__)

E = TypeVar("E")


class UpstreamBackend:
    """What the upstream backends share: construction, lifecycle and health. ``load`` starts
    the pooled client and health checks (it never fails on an unreachable upstream: that is a
    request-time 503 or a fallback); ``unload``/``aclose`` stop them. Subclasses set
    ``health_path`` and map upstream error replies in ``map_status``."""

    kind: str
    health_path: str
    capabilities_timeout: float = 2.0

    def __init__(self, settings: UpstreamSettings, base_dir: Path | None = None) -> None:
        self.model = settings.name
        self.client = UpstreamClient(settings, self.health_path, self.map_status)
        self._capabilities: ModelCapabilities | None = None

    def map_status(self, status: int, body: bytes) -> GatewayError:
        raise NotImplementedError

    async def capabilities(self) -> ModelCapabilities | None:
        """What the upstream says the model can do (``HasCapabilities``), asked within
        ``capabilities_timeout`` seconds; an answer is kept for the backend's life. Never
        raises: an upstream that cannot say now (down, slow, an odd reply) gives None."""
        if self._capabilities is None:
            try:
                async with asyncio.timeout(self.capabilities_timeout):
                    self._capabilities = await self.ask_capabilities()
            except (GatewayError, *TRANSPORT_ERRORS) as exc:
                log.info("model %s: the upstream did not say its capabilities: %r", self.model, exc)
        return self._capabilities

    async def ask_capabilities(self) -> ModelCapabilities | None:
        """Ask the upstream (one request through ``self.client.fetch_json``)."""
        raise NotImplementedError

    async def open(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[AsyncIterator[bytes]], AsyncIterator[E]],
    ) -> tuple[UpstreamStream[E], Deadline]:
        """POST ``body`` (starting the client on first use); see ``UpstreamClient.open_stream``."""
        if not self.client.started:
            await self.load()
        deadline = Deadline(self.client.settings.timeouts.total)
        return await self.client.open_stream(path, body, parse, deadline), deadline

    async def items(
        self, upstream: UpstreamStream[E], deadline: Deadline, ended_early: str
    ) -> AsyncGenerator[E, None]:
        """``upstream``'s first event and every further one, each within its deadlines; the
        consumer stops at the protocol's last event. An upstream that closes before that
        raises ``UpstreamError`` saying ``ended_early``. Closing this closes ``upstream``.

        The idle deadline is the transport's read timeout (set per request in
        ``open_stream``), so no timer is armed per event; the total deadline is checked as
        each event arrives. Transport failures are mapped here, inline: this runs once per
        relayed chunk."""
        model, events = self.model, upstream.events
        try:
            item = upstream.first
            while True:
                yield item
                try:
                    item = await events.__anext__()
                except StopAsyncIteration:
                    raise UpstreamError(f"model '{model}': {ended_early}") from None
                except GatewayError:
                    raise
                except TRANSPORT_ERRORS as exc:
                    raise transport_error(model, exc, mid_stream=True) from exc
                if deadline.passed():
                    raise BackendTimeoutError(
                        f"model '{model}': the request passed its total deadline"
                    )
        finally:
            await upstream.aclose()

    @property
    def loaded(self) -> bool:
        return self.client.started

    async def load(self) -> None:
        await self.client.start()

    async def unload(self) -> None:
        await self.client.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    def replica_health(self) -> dict[str, bool]:
        """Each replica's URL and whether it takes requests now (read by /metrics)."""
        return self.client.pool.availability()

    async def health(self) -> Health:
        if not self.client.started:
            return Health("unloaded")
        if self.client.pool.any_available():
            return Health("ok")
        return Health("degraded", "no upstream replica is available")
