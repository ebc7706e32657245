"""Where rate-limit counters live: in this process (``MemoryLimitStore``) or in Redis
(``RedisLimitStore``, one budget for every gateway replica), behind one small interface.

Each budget is a ``Bucket``: ``limit`` units per ``window`` seconds, refilled continuously —
the generic cell rate algorithm (GCRA), which stores one number per bucket, its "theoretical
arrival time" (TAT): the moment the bucket will be full again. A bucket of ``limit`` per
minute lets a client spend the whole minute's budget at once, then one more unit each
``window / limit`` seconds. A unit fits when ``TAT + window / limit - now <= window``.

``admit`` is all-or-nothing over several buckets (a key's and a model's): each bucket must have
room for ``max(cost, 1)`` units, and only then is ``cost`` taken from each; a bucket of cost 0
(tokens, whose number is known only when the request ends) is checked, not charged.
``charge`` adds units afterwards, even past the limit (a debt that later requests wait out).
Redis runs both as Lua scripts (``EVALSHA``, loaded again when the server forgot them), so
replicas never race a read-modify-write. Keys are ``llmgate:rl:<bucket>`` and expire once
the bucket is full again. Times are wall-clock seconds from the caller (replicas' clocks are
assumed NTP-synchronised: a skew of d seconds shifts a budget by d).

Stores raise only ``LimitStoreError`` (the store is unreachable or failed); the caller decides
whether to fail open or closed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

_EPSILON = 1e-6  # TATs travel through Redis as "%.6f" text: allow for that rounding
_KEY_PREFIX = "llmgate:rl:"


class LimitStoreError(Exception):
    """The store could not be reached or answered with an error."""


@dataclass(frozen=True)
class Bucket:
    """A budget: ``limit`` units per ``window`` seconds; ``cost`` is what admission takes."""

    name: str
    limit: int
    cost: int = 1
    window: float = 60.0

    @property
    def interval(self) -> float:
        return self.window / self.limit


@dataclass(frozen=True)
class BucketState:
    """A bucket after an admission: ``remaining`` whole units, ``reset`` seconds until full,
    ``retry_after`` seconds until it would admit (0: it did)."""

    bucket: Bucket
    remaining: int
    reset: float
    retry_after: float


def bucket_state(bucket: Bucket, after: float, need: float, now: float) -> BucketState:
    """The state of ``bucket`` whose TAT is ``after``; ``need`` is the TAT it needed to admit."""
    used = max(0.0, after - now)
    remaining = math.floor((bucket.window - used) / bucket.interval + _EPSILON)
    return BucketState(
        bucket=bucket,
        remaining=max(0, min(bucket.limit, remaining)),
        reset=used,
        retry_after=max(0.0, need - now - bucket.window),
    )


def gcra_admit(
    buckets: Sequence[Bucket], tats: Sequence[float | None], now: float
) -> tuple[bool, list[float], list[float]]:
    """The admission arithmetic (mirrored by ``_ADMIT_LUA``): whether all buckets admit, each
    bucket's TAT after it, and the TAT each needed."""
    bases = [now if tat is None else max(tat, now) for tat in tats]
    needs = [base + max(b.cost, 1) * b.interval for b, base in zip(buckets, bases, strict=True)]
    admitted = all(
        need - now <= b.window + _EPSILON for b, need in zip(buckets, needs, strict=True)
    )
    afters = [
        base + b.cost * b.interval if admitted else base
        for b, base in zip(buckets, bases, strict=True)
    ]
    return admitted, afters, needs


class LimitStore(Protocol):
    async def admit(self, buckets: Sequence[Bucket], now: float) -> list[BucketState]:
        """Take each bucket's ``cost`` if every bucket has room (see the module docstring);
        the states say whether it did (``retry_after == 0`` for all)."""
        ...

    async def charge(self, bucket: Bucket, amount: int, now: float) -> None:
        """Take ``amount`` units from ``bucket`` now, even past its limit."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimitStore:
    """Counters in this process: each replica enforces its own budget. Loop-only access."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}

    async def admit(self, buckets: Sequence[Bucket], now: float) -> list[BucketState]:
        tats = [self._tats.get(b.name) for b in buckets]
        admitted, afters, needs = gcra_admit(buckets, tats, now)
        if admitted:
            for bucket, after in zip(buckets, afters, strict=True):
                self._tats[bucket.name] = after
        self._forget_full(now)
        return [bucket_state(*s, now) for s in zip(buckets, afters, needs, strict=True)]

    async def charge(self, bucket: Bucket, amount: int, now: float) -> None:
        tat = max(self._tats.get(bucket.name, now), now)
        self._tats[bucket.name] = tat + amount * bucket.interval

    async def aclose(self) -> None:
        self._tats.clear()

    def _forget_full(self, now: float) -> None:
        # a full bucket and a missing one are the same state: keep the table bounded
        if len(self._tats) > 4096:
            self._tats = {name: tat for name, tat in self._tats.items() if tat > now}


_ADMIT_LUA = """
local now = tonumber(ARGV[1])
local bases, needs, costs, intervals = {}, {}, {}, {}
local admitted = 1
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1])
  local interval = window / limit
  local base = now
  local stored = redis.call('GET', KEYS[i])
  if stored then base = math.max(tonumber(stored), now) end
  local need = base + math.max(cost, 1) * interval
  if need - now > window + 1e-6 then admitted = 0 end
  bases[i], needs[i], costs[i], intervals[i] = base, need, cost, interval
end
local out = {admitted}
for i = 1, #KEYS do
  local after = bases[i]
  if admitted == 1 and costs[i] > 0 then
    after = bases[i] + costs[i] * intervals[i]
    redis.call('SET', KEYS[i], string.format('%.6f', after),
               'PX', math.ceil((after - now) * 1000) + 1000)
  end
  out[#out + 1] = string.format('%.6f', after)
  out[#out + 1] = string.format('%.6f', needs[i])
end
return out
"""

_CHARGE_LUA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[3]) / tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then tat = math.max(tonumber(stored), now) end
tat = tat + tonumber(ARGV[4]) * interval
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return string.format('%.6f', tat)
"""


class RedisLimitStore:
    """Counters in Redis (``redis_url``): every replica pointing at it shares each budget.
    Each call gives up after ``timeout`` seconds (connect or answer), raising
    ``LimitStoreError``; nothing is retried (the caller's policy decides, at once)."""

    def __init__(self, url: str, timeout: float = 0.25) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._timeout = timeout
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._charge = self._redis.register_script(_CHARGE_LUA)

    async def admit(self, buckets: Sequence[Bucket], now: float) -> list[BucketState]:
        args: list[str | int | float] = [repr(now)]
        for b in buckets:
            args += [b.limit, b.cost, repr(b.window)]
        reply = await self._call(self._admit, [_KEY_PREFIX + b.name for b in buckets], args)
        values = [float(v) for v in reply[1:]]
        return [
            bucket_state(bucket, values[2 * i], values[2 * i + 1], now)
            for i, bucket in enumerate(buckets)
        ]

    async def charge(self, bucket: Bucket, amount: int, now: float) -> None:
        args: list[str | int | float] = [repr(now), bucket.limit, repr(bucket.window), amount]
        await self._call(self._charge, [_KEY_PREFIX + bucket.name], args)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _call(self, script: object, keys: list[str], args: list[str | int | float]) -> list:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout * 4):
                reply = await script(keys=keys, args=args)  # type: ignore[operator]
        except (RedisError, OSError, TimeoutError) as exc:
            raise LimitStoreError(f"{type(exc).__name__}: {exc}") from exc
        return reply if isinstance(reply, list) else [reply]
