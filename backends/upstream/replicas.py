"""Replicas of one upstream and the choice among them: least-busy among those healthy and not
cooling down. Pure bookkeeping (no I/O): ``UpstreamClient`` records outcomes and health checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    healthy: bool = True

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.cooldown_until


@dataclass
class ReplicaPool:
    """Least-busy choice among replicas that are healthy and not cooling down.

    ``failure_threshold`` consecutive failures put a replica in cool-down for ``cooldown``
    seconds; a success, or a health check that passes after one failed, brings it back.
    """

    urls: list[str]
    failure_threshold: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    replicas: list[Replica] = field(init=False)
    _turn: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.replicas = [Replica(url) for url in self.urls]

    def choose(self, exclude: set[str] | None = None) -> Replica | None:
        now = self.clock()
        candidates = [
            r for r in self.replicas if r.available(now) and r.url not in (exclude or set())
        ]
        if not candidates:
            return None
        least = min(r.in_flight for r in candidates)
        tied = [r for r in candidates if r.in_flight == least]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def record_success(self, replica: Replica) -> None:
        replica.consecutive_failures = 0
        replica.cooldown_until = 0.0
        replica.healthy = True

    def record_failure(self, replica: Replica) -> None:
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.failure_threshold:
            replica.cooldown_until = self.clock() + self.cooldown
            log.warning(
                "replica %s failed %d times in a row: cooling down %.0fs",
                replica.url,
                replica.consecutive_failures,
                self.cooldown,
            )

    def record_health(self, replica: Replica, ok: bool) -> None:
        """A health check's outcome: a failing one takes the replica out. A passing one after
        a failing one (the upstream was down and is back) brings it back at once, its
        cool-down ended; one that keeps passing leaves a cool-down alone (a replica can answer
        its health route and still fail requests)."""
        if ok and not replica.healthy:
            replica.cooldown_until = 0.0
            replica.consecutive_failures = 0
        replica.healthy = ok

    def availability(self) -> dict[str, bool]:
        """Each replica's URL and whether it takes requests now (healthy, not cooling down)."""
        now = self.clock()
        return {r.url: r.available(now) for r in self.replicas}

    def any_available(self) -> bool:
        now = self.clock()
        return any(r.available(now) for r in self.replicas)
