"""The weight limiter and the retry policy, driven by a FakeClock: nothing sleeps for real."""

from __future__ import annotations

import asyncio
import random

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import (
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.retry import RetryPolicy, call_with_retry


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_grants_within_budget_without_waiting() -> None:
    clock = FakeClock()
    lim = WeightLimiter(10, 60, clock=clock)
    grants = [await lim.acquire(2) for _ in range(5)]
    assert lim.used() == 10
    assert clock.slept == []
    for g in grants:
        g.release()
    assert lim.used() == 10  # released weight stays booked for a window


async def test_weight_is_held_until_a_window_after_the_reply() -> None:
    clock = FakeClock()
    lim = WeightLimiter(10, 60, clock=clock)
    grant = await lim.acquire(10)
    waiter = asyncio.create_task(lim.acquire(1))
    await clock.advance(3600)  # in flight: no amount of time frees it
    assert not waiter.done()
    await clock.advance(5)
    grant.release()  # the reply arrives at t=3605 s
    await settle()
    await clock.advance(59.999)
    assert not waiter.done()
    await clock.advance(0.001)
    await settle()
    assert waiter.done()
    assert lim.used() == 1


async def test_waiters_are_served_in_order() -> None:
    clock = FakeClock()
    lim = WeightLimiter(10, 1, clock=clock)
    (await lim.acquire(10)).release()
    order: list[int] = []

    async def take(i: int, w: int) -> None:
        (await lim.acquire(w)).release()
        order.append(i)

    tasks = [asyncio.create_task(take(0, 9))] + [
        asyncio.create_task(take(i, 1)) for i in range(1, 4)]
    await settle()
    for _ in range(10):
        await clock.advance(1)
        await settle()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]  # the heavy request is not overtaken by light ones


async def test_oversized_request_waits_for_an_empty_book() -> None:
    clock = FakeClock()
    lim = WeightLimiter(10, 1, clock=clock)
    (await lim.acquire(3)).release()
    big = asyncio.create_task(lim.acquire(50))
    await settle()
    assert not big.done()
    await clock.advance(1)
    await settle()
    assert big.done()


async def test_pause_blocks_grants() -> None:
    clock = FakeClock()
    lim = WeightLimiter(100, 60, clock=clock)
    lim.pause(7)
    waiter = asyncio.create_task(lim.acquire(1))
    await settle()
    await clock.advance(6.9)
    assert not waiter.done()
    await clock.advance(0.1)
    await settle()
    assert waiter.done()


async def test_server_reported_weight_is_booked() -> None:
    clock = FakeClock()
    lim = WeightLimiter(100, 60, clock=clock)
    (await lim.acquire(10)).release()
    lim.observe_used(5)  # less than ours: nothing to add
    assert lim.used() == 10
    lim.observe_used(95)  # someone else on this IP spent 85
    assert lim.used() == 95


async def test_max_rps_spaces_grants() -> None:
    clock = FakeClock(autoadvance=True)
    lim = WeightLimiter(1000, 60, clock=clock, max_rps=4)
    start = clock.now_ms()
    for _ in range(5):
        (await lim.acquire(1)).release()
    assert clock.now_ms() - start == 4 * 250


async def simulate(budget: int, window_s: float, *, seconds: float, workers: int,
                   seed: int) -> tuple[list[tuple[int, int]], int]:
    """Workers loop: acquire a random weight, reach the 'server' after a random delay,
    get the reply after another; returns (arrival_ms, weight) per request and the end."""
    rng = random.Random(seed)
    clock = FakeClock(0)
    lim = WeightLimiter(budget, window_s, clock=clock)
    arrivals: list[tuple[int, int]] = []
    stop_ms = int(seconds * 1000)

    async def worker() -> None:
        while clock.now_ms() < stop_ms:
            weight = rng.choice([1, 2, 2, 5, 10])
            async with lim.reserve(weight):
                await clock.sleep(rng.uniform(0.0, 0.8))  # queueing on the way in
                arrivals.append((clock.now_ms(), weight))
                await clock.sleep(rng.uniform(0.0, 0.3))  # the reply travelling back

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    while not all(t.done() for t in tasks):
        await settle()
        wake = clock.next_wakeup_ms()
        if wake is None:
            await settle()
            continue
        await clock.run_until(wake)
    await asyncio.gather(*tasks)
    return arrivals, stop_ms


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_window_of_any_alignment_overflows(seed: int) -> None:
    budget, window_ms = 60, 2_000
    arrivals, _ = await simulate(budget, window_ms / 1000, seconds=120, workers=12, seed=seed)
    arrivals.sort()
    times = [t for t, _ in arrivals]
    weights = [w for _, w in arrivals]
    # The heaviest window of any alignment starts at some arrival: check them all.
    j, in_window, worst = 0, 0, 0
    for i, t in enumerate(times):
        in_window += weights[i]
        while times[j] <= t - window_ms:
            in_window -= weights[j]
            j += 1
        worst = max(worst, in_window)
    assert worst <= budget
    assert worst >= budget * 0.8  # and it is not timid either


async def test_saturation_spends_most_of_the_budget() -> None:
    budget, window_s, seconds = 100, 10.0, 600
    arrivals, _ = await simulate(budget, window_s, seconds=seconds, workers=30, seed=9)
    achieved = sum(w for _, w in arrivals) / seconds
    ceiling = budget / window_s
    # Each request holds its weight for a window plus its own round trip (up to 1.1 s of
    # a 10 s window here), so about 90% or more of the ceiling is reachable.
    assert achieved >= 0.85 * ceiling


# ---------------------------------------------------------------------- retry policy


async def test_retry_backoff_is_bounded_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(1)
    for retry in range(1, 10):
        cap = min(8.0, 2 ** (retry - 1))
        delays = [policy.backoff_s(retry, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8


async def test_retry_recovers_from_transient_errors() -> None:
    clock = FakeClock(autoadvance=True)
    calls = 0
    seen: list[float] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientSourceError("HTTP 503")
        return "ok"

    result = await call_with_retry(flaky, policy=RetryPolicy(), clock=clock,
                                   on_retry=lambda n, e, d: seen.append(d))
    assert result == "ok" and calls == 3
    assert clock.slept == seen


async def test_retry_honours_retry_after() -> None:
    clock = FakeClock(autoadvance=True)
    attempts = iter([RateLimitedError("429", retry_after=42.0), None])

    async def once() -> int:
        exc = next(attempts)
        if exc is not None:
            raise exc
        return 1

    assert await call_with_retry(once, policy=RetryPolicy(max_delay_s=5), clock=clock) == 1
    assert len(clock.slept) == 1 and 42.0 <= clock.slept[0] <= 43.0


async def test_retry_gives_up_and_skips_permanent_errors() -> None:
    clock = FakeClock(autoadvance=True)
    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise TransientSourceError("timeout")

    with pytest.raises(TransientSourceError):
        await call_with_retry(always_down, policy=RetryPolicy(max_attempts=4), clock=clock)
    assert calls == 4 and len(clock.slept) == 3

    async def bad_symbol() -> None:
        raise SourceError("invalid symbol")

    with pytest.raises(SourceError):
        await call_with_retry(bad_symbol, policy=RetryPolicy(), clock=clock)
    assert len(clock.slept) == 3

    async def banned() -> None:
        raise RateLimitedError("418", retry_after=86_400)

    with pytest.raises(RateLimitedError):
        await call_with_retry(banned, policy=RetryPolicy(), clock=clock)
    assert len(clock.slept) == 3  # a day-long ban is not waited out inside a fetch
