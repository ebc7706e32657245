"""Rate limits per API key and per model: 429 ``rate_limit_exceeded`` with ``Retry-After`` and
OpenAI's ``x-ratelimit-*`` headers.

- Per key (``server.api_keys[]``): ``rpm`` and ``tpm`` (prompt + completion tokens) per minute,
  and ``max_parallel`` requests at once. ``RateLimiter.open_admission`` (called by
  ``gateway.middleware.RequestMiddleware`` once the key is known) admits each POST to a model
  route (``/admin/*`` and GETs are not counted): a free parallel slot, a token budget not yet
  spent, one request taken from the request budget. When the response has ended
  ``close_admission`` charges the request's actual tokens (its ``RequestRecord``) to the key's
  token budget and to the serving model's, and gives the slot back.
- Per model (``server.model_limits``, by public name): ``rpm`` and ``tpm`` for all keys
  together. The resolved chain goes through ``limit_chain`` (``gateway.api._chain``): each
  backend is admitted against its own model's budget when the request first reaches it, so an
  exhausted model falls back to its ``fallbacks`` like any retryable failure, and answers 429
  when none is left.

Budgets are GCRA buckets (``gateway.limit_store``): a full minute's budget may be spent at once,
then it refills continuously. Counters live in this process, or in Redis with
``server.redis_url`` (every replica enforces one budget). ``max_parallel`` is counted per
replica (a slot must be released even when a replica dies, which a process-local count
guarantees). While the store is unreachable, ``server.rate_limit_failure`` decides: ``open``
admits without limits, ``closed`` answers 503 ``rate_limit_unavailable``; the outage is logged
once, and its end once.

Responses of limited requests (successes and 429s) carry ``x-ratelimit-limit-requests``,
``-remaining-requests``, ``-reset-requests`` (time until the budget is full again, e.g.
``1.2s``) and the same for ``-tokens``; where a key and a model both limit a unit, the headers
show the one with fewer remaining.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from backends.errors import BackendUnavailableError, GatewayError, RateLimitError
from backends.protocol import Backend
from gateway.config import ApiKey, GatewayConfig, ModelLimits
from gateway.errors import error_response
from gateway.limit_store import (
    Bucket,
    BucketState,
    LimitStore,
    LimitStoreError,
    MemoryLimitStore,
    RedisLimitStore,
)
from gateway.request_record import current_record

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_UNITS = ("requests", "tokens")


class RateLimitUnavailableError(BackendUnavailableError):
    """503: the rate-limit store is unreachable and ``rate_limit_failure`` is ``closed``."""

    default_code = "rate_limit_unavailable"


@dataclass
class Admission:
    """What the limits said about one request (``open_admission``'s, read by ``limit_chain``
    and, for the response's headers, by the middleware)."""

    limiter: RateLimiter
    key_id: str | None
    key_states: list[BucketState] = field(default_factory=list)
    model_states: list[BucketState] = field(default_factory=list)
    key_buckets: list[Bucket] = field(default_factory=list)
    holds_slot: bool = False  # a parallel slot of the key, given back by close_admission

    def headers(self) -> list[tuple[bytes, bytes]]:
        states = self.key_states + self.model_states
        out: list[tuple[bytes, bytes]] = []
        for unit in _UNITS:
            mine = [s for s in states if unit_of(s.bucket) == unit]
            if not mine:
                continue
            tight = min(mine, key=lambda s: (s.remaining, -s.reset))
            for name, value in (
                ("limit", str(tight.bucket.limit)),
                ("remaining", str(tight.remaining)),
                ("reset", format_duration(tight.reset)),
            ):
                out.append((f"x-ratelimit-{name}-{unit}".encode(), value.encode()))
        return out


_ADMISSION: contextvars.ContextVar[Admission | None] = contextvars.ContextVar(
    "llmgate_admission", default=None
)


def unit_of(bucket: Bucket) -> str:
    return bucket.name.rsplit(":", 1)[-1]


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.2s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


class RateLimiter:
    """The budgets of every key and model, over one ``LimitStore``; see the module docstring.
    ``clock`` is wall-clock seconds (shared by replicas through Redis)."""

    def __init__(
        self,
        keys: Sequence[ApiKey],
        model_limits: dict[str, ModelLimits],
        store: LimitStore,
        failure: Literal["open", "closed"] = "open",
        clock: Clock = time.time,
    ) -> None:
        self.keys = {k.key_id: k for k in keys if k.rpm or k.tpm or k.max_parallel}
        self.model_limits = {m: lim for m, lim in model_limits.items() if lim.rpm or lim.tpm}
        self.store = store
        self.failure = failure
        self.clock = clock
        self._parallel: dict[str, int] = {}
        self._store_down = False

    @classmethod
    def from_config(cls, config: GatewayConfig, clock: Clock = time.time) -> RateLimiter:
        server = config.server
        by_name: dict[str, ModelLimits] = {}
        for model in config.models:
            for name in model.public_names():
                if name in server.model_limits:
                    by_name[model.name] = server.model_limits[name]
        store: LimitStore = (
            RedisLimitStore(server.redis_url) if server.redis_url else MemoryLimitStore()
        )
        return cls(server.api_key_entries(), by_name, store, server.rate_limit_failure, clock)

    @property
    def active(self) -> bool:
        return bool(self.keys or self.model_limits)

    def key_buckets(self, key_id: str | None) -> list[Bucket]:
        key = self.keys.get(key_id or "")
        return [] if key is None else _buckets(f"key:{key_id}", key.rpm, key.tpm)

    def model_buckets(self, model: str) -> list[Bucket]:
        limits = self.model_limits.get(model)
        return [] if limits is None else _buckets(f"model:{model}", limits.rpm, limits.tpm)

    def acquire_parallel(self, key_id: str | None) -> bool:
        """Take a parallel slot of the key (True when it has no ``max_parallel``)."""
        key = self.keys.get(key_id or "")
        if key_id is None or key is None or key.max_parallel is None:
            return True
        if self._parallel.get(key_id, 0) >= key.max_parallel:
            return False
        self._parallel[key_id] = self._parallel.get(key_id, 0) + 1
        return True

    def release_parallel(self, key_id: str | None) -> None:
        if key_id is not None and key_id in self._parallel:
            self._parallel[key_id] -= 1
            if self._parallel[key_id] <= 0:
                del self._parallel[key_id]

    async def admit(self, buckets: list[Bucket]) -> list[BucketState]:
        """Take one request from ``buckets`` if all have room (``refusal`` reads the states);
        raises ``RateLimitUnavailableError`` (503) when the store is down and failing closed
        (failing open: no states)."""
        if not buckets:
            return []
        try:
            states = await self.store.admit(buckets, self.clock())
        except LimitStoreError as exc:
            self._store_failed(exc)
            if self.failure == "closed":
                raise RateLimitUnavailableError(
                    "rate limits cannot be checked right now; retry shortly", retry_after=1
                ) from None
            return []
        self._store_answered()
        return states

    @staticmethod
    def refusal(states: list[BucketState], who: str) -> RateLimitError | None:
        """The 429 for states of which one is spent (None: admitted)."""
        spent = [s for s in states if s.retry_after > 0]
        if not spent:
            return None
        worst = max(spent, key=lambda s: s.retry_after)
        return RateLimitError(
            f"rate limit exceeded for {who}: {worst.bucket.limit} {unit_of(worst.bucket)} "
            f"per minute; retry in {format_duration(worst.retry_after)}",
            retry_after=worst.retry_after,
        )

    async def charge(self, buckets: list[Bucket], tokens: int) -> None:
        """Charge ``tokens`` to the token buckets among ``buckets`` (never raises)."""
        for bucket in buckets:
            if unit_of(bucket) != "tokens" or tokens <= 0:
                continue
            try:
                await self.store.charge(bucket, tokens, self.clock())
            except LimitStoreError as exc:
                self._store_failed(exc)
                return
            self._store_answered()

    def counts(self, scope: Scope) -> bool:
        """Whether the request is admitted against the limits: a POST to a model route, when
        any key or model has limits."""
        return self.active and scope["method"] == "POST" and not scope["path"].startswith("/admin/")

    async def open_admission(self, key_id: str | None) -> tuple[Admission, GatewayError | None]:
        """Admit one request of the key ``key_id``: a parallel slot, then one request from its
        budgets. With a refusal (429; 503 while the store fails closed) the admission holds
        nothing; else it holds the key's slot until ``close_admission``."""
        admission = Admission(self, key_id)
        if not self.acquire_parallel(key_id):
            assert key_id is not None  # only a named key has a max_parallel
            return admission, RateLimitError(
                f"too many requests in progress for API key '{key_id}' "
                f"(max_parallel {self.keys[key_id].max_parallel})",
                retry_after=1,
            )
        admission.key_buckets = self.key_buckets(key_id)
        refusal: GatewayError | None
        try:
            admission.key_states = await self.admit(admission.key_buckets)
            refusal = self.refusal(admission.key_states, f"API key '{key_id}'")
        except GatewayError as exc:
            refusal = exc
        except BaseException:
            self.release_parallel(key_id)
            raise
        if refusal is not None:
            self.release_parallel(key_id)
        else:
            admission.holds_slot = True
        return admission, refusal

    async def close_admission(self, admission: Admission, completed: bool) -> None:
        """The request has ended: charge its tokens (when it ``completed``: its response was
        sent) to the key's and the serving model's token budgets; give the slot back."""
        try:
            record = current_record()
            if completed and record is not None and record.total_tokens > 0:
                buckets = list(admission.key_buckets)
                if record.model is not None:
                    buckets += self.model_buckets(record.model)
                await self.charge(buckets, record.total_tokens)
        finally:
            if admission.holds_slot:
                admission.holds_slot = False
                self.release_parallel(admission.key_id)

    async def aclose(self) -> None:
        await self.store.aclose()

    def _store_failed(self, exc: LimitStoreError) -> None:
        if not self._store_down:
            self._store_down = True
            log.warning(
                "rate limits: the limit store is unreachable (%s); failing %s until it answers",
                exc,
                self.failure,
            )

    def _store_answered(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("rate limits: the limit store answers again; limits enforced")


def _buckets(prefix: str, rpm: int | None, tpm: int | None) -> list[Bucket]:
    buckets = []
    if rpm:
        buckets.append(Bucket(f"{prefix}:requests", rpm, cost=1))
    if tpm:
        buckets.append(Bucket(f"{prefix}:tokens", tpm, cost=0))
    return buckets


def set_current_admission(admission: Admission) -> contextvars.Token[Admission | None]:
    """Make ``admission`` the one ``limit_chain`` reads in this context (undo with
    ``reset_current_admission``)."""
    return _ADMISSION.set(admission)


def reset_current_admission(token: contextvars.Token[Admission | None]) -> None:
    _ADMISSION.reset(token)


async def refuse(error: GatewayError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request the limits refused (its code noted in the request record)."""
    record = current_record()
    if record is not None:
        record.error_type = error.code
    await error_response(error, scope["path"])(scope, receive, send)


def limit_chain(chain: list[Backend]) -> list[Backend]:
    """``chain`` with each backend admitted against its model's limits before it is used
    (unchanged when no model has limits or outside a limited request)."""
    admission = _ADMISSION.get()
    if admission is None or not admission.limiter.model_limits:
        return chain
    return [ModelLimitedBackend(b, admission) for b in chain]


class ModelLimitedBackend:
    """A proxy that admits the request against its model's budget on the first call that
    does work (``generate``, the relay, ``embed``); every other attribute is the backend's."""

    _GATED = frozenset({"generate", "relay", "relay_stream", "embed"})

    def __init__(self, backend: Backend, admission: Admission) -> None:
        self._backend = backend
        self._admission = admission
        self._admitted = False

    @property
    def unwrapped(self) -> Backend:
        return self._backend

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if name not in self._GATED:
            return value

        async def admitted_first(*args: Any, **kwargs: Any) -> Any:
            await self._admit()
            return await value(*args, **kwargs)

        return admitted_first

    async def _admit(self) -> None:
        if self._admitted:
            return
        model = self._backend.model
        limiter = self._admission.limiter
        states = await limiter.admit(limiter.model_buckets(model))
        self._admission.model_states = states
        refusal = limiter.refusal(states, f"model '{model}'")
        if refusal is not None:
            raise refusal
        self._admitted = True


def install_rate_limits(
    app: FastAPI, config: GatewayConfig, clock: Clock = time.time
) -> RateLimiter:
    """The app's limiter (``app.state.rate_limiter``, for ``RequestMiddleware``); its store is
    closed when the app stops."""
    limiter = RateLimiter.from_config(config, clock)
    app.state.rate_limiter = limiter
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        try:
            async with inner(app) as state:
                yield state
        finally:
            await limiter.aclose()

    app.router.lifespan_context = lifespan
    return limiter
