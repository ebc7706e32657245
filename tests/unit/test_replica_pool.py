from __future__ import annotations

from backends.upstream.replicas import ReplicaPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_least_busy_replica_is_chosen():
    pool = ReplicaPool(["a", "b", "c"])
    pool.replicas[0].in_flight = 2
    pool.replicas[1].in_flight = 0
    pool.replicas[2].in_flight = 1
    assert pool.choose().url == "b"


def test_ties_rotate():
    pool = ReplicaPool(["a", "b"])
    assert {pool.choose().url for _ in range(4)} == {"a", "b"}


def test_consecutive_failures_cool_a_replica_down_then_it_returns():
    clock = Clock()
    pool = ReplicaPool(["a", "b"], failure_threshold=2, cooldown=10, clock=clock)
    a = pool.replicas[0]
    pool.record_failure(a)
    assert pool.choose(exclude={"b"}) is a  # one failure: still in
    pool.record_failure(a)
    assert pool.choose(exclude={"b"}) is None  # cooling down
    clock.now += 10
    assert pool.choose(exclude={"b"}) is a
    pool.record_success(a)
    assert a.consecutive_failures == 0


def test_failed_health_check_takes_a_replica_out_until_it_passes():
    pool = ReplicaPool(["a"])
    pool.record_health(pool.replicas[0], ok=False)
    assert pool.choose() is None and not pool.any_available()
    pool.record_health(pool.replicas[0], ok=True)
    assert pool.choose() is not None


def test_exclude_skips_tried_replicas():
    pool = ReplicaPool(["a", "b"])
    assert pool.choose(exclude={"a"}).url == "b"
    assert pool.choose(exclude={"a", "b"}) is None


def test_a_replica_back_after_a_failed_health_check_leaves_its_cooldown_at_once():
    clock = Clock()
    pool = ReplicaPool(["a"], failure_threshold=1, cooldown=30, clock=clock)
    a = pool.replicas[0]
    pool.record_failure(a)
    pool.record_health(a, ok=True)  # it answers its health route: the cool-down stands
    assert pool.choose() is None
    pool.record_health(a, ok=False)  # down
    pool.record_health(a, ok=True)  # and back (restarted): serving again, not 30 s later
    assert pool.choose() is a and a.consecutive_failures == 0
