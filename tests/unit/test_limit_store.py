"""The budgets' arithmetic (GCRA) on a fake clock, and the reset format clients read."""

from __future__ import annotations

import pytest

from gateway.limit_store import Bucket, MemoryLimitStore, gcra_admit
from gateway.rate_limits import format_duration

pytestmark = pytest.mark.anyio

REQUESTS = Bucket("key:k:requests", limit=3)  # one request each 20 s, three at once
TOKENS = Bucket("key:k:tokens", limit=600, cost=0)  # ten tokens a second


async def test_a_full_minute_is_spent_at_once_then_one_request_per_interval():
    store, now = MemoryLimitStore(), 1000.0
    states = [(await store.admit([REQUESTS], now))[0] for _ in range(3)]
    assert [(s.remaining, s.reset, s.retry_after) for s in states] == [
        (2, 20.0, 0.0),
        (1, 40.0, 0.0),
        (0, 60.0, 0.0),
    ]
    [refused] = await store.admit([REQUESTS], now)
    assert (refused.remaining, refused.retry_after) == (0, 20.0)
    [refused] = await store.admit([REQUESTS], now + 19.5)  # a refusal takes nothing
    assert refused.retry_after == pytest.approx(0.5)
    [admitted] = await store.admit([REQUESTS], now + 20)
    assert (admitted.remaining, admitted.retry_after) == (0, 0.0)


async def test_an_idle_bucket_refills_to_its_limit_and_no_further():
    store, now = MemoryLimitStore(), 1000.0
    for _ in range(3):
        await store.admit([REQUESTS], now)
    [state] = await store.admit([REQUESTS], now + 3600)
    assert (state.remaining, state.reset) == (2, 20.0)


async def test_tokens_are_checked_at_admission_and_charged_after():
    store, now = MemoryLimitStore(), 1000.0
    [state] = await store.admit([TOKENS], now)
    assert (state.remaining, state.retry_after) == (600, 0.0)  # nothing taken yet
    await store.charge(TOKENS, 900, now)  # a request that used more than the minute's budget
    [state] = await store.admit([TOKENS], now)
    assert (state.remaining, state.reset) == (0, 90.0)
    assert state.retry_after == pytest.approx(30.1)  # until one token is back
    [state] = await store.admit([TOKENS], now + 30.1)
    assert state.retry_after == 0.0 and state.remaining == 1


async def test_admission_over_several_buckets_is_all_or_nothing():
    store, now = MemoryLimitStore(), 1000.0
    model = Bucket("model:m:requests", limit=1)
    await store.admit([model], now)
    key_state, model_state = await store.admit([REQUESTS, model], now)
    assert model_state.retry_after == 60.0 and key_state.retry_after == 0.0
    assert key_state.remaining == 3  # the key's request was not taken: the model refused
    [key_state] = await store.admit([REQUESTS], now)
    assert key_state.remaining == 2


def test_gcra_of_an_unknown_bucket_starts_full():
    admitted, afters, needs = gcra_admit([REQUESTS], [None], 50.0)
    assert admitted and afters == [70.0] and needs == [70.0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.0201, "21ms"), (1.2, "1.2s"), (1.21, "1.3s"), (20.0, "20s"), (360, "6m0s")],
)
def test_reset_reads_like_openais(seconds, text):
    assert format_duration(seconds) == text
