"""The adaptive budget (AIMD) inside the weight limiter, driven by a FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import BannedError
from candlekeep.sources.adaptive_budget import AdaptiveBudget
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.retry import RetryPolicy, call_with_retry

WINDOW_MS = 60_000


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def spend(lim: WeightLimiter, requests: int, weight: int = 10) -> None:
    """``requests`` requests one after the other, each answered fine."""
    for _ in range(requests):
        async with lim.reserve(weight):
            pass


async def test_a_429_within_budget_cuts_to_a_share_of_the_books_and_pauses() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)
    lim.on_rate_limited(5)
    snap = lim.snapshot()
    assert (snap.effective_budget, snap.advertised_budget, snap.wall, snap.cuts) == \
        (70, 1000, 100, 1)
    assert snap.paused_until_ms == clock.now_ms() + 5000
    waiter = asyncio.create_task(lim.acquire(1))
    await settle()
    assert not waiter.done()  # nothing is sent before Retry-After, whatever the budget
    await clock.advance(4.999)
    assert not waiter.done()


async def test_429s_of_requests_granted_before_the_cut_count_as_one_cut() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)
    for _ in range(6):  # the 429 and the replies of the requests that were in flight
        lim.on_rate_limited(5)
    assert lim.snapshot().cuts == 1 and lim.budget == 70 and lim.rate_limited == 6
    await clock.advance(5)
    lim.on_rate_limited(5)  # after the pause: a new episode
    assert lim.snapshot().cuts == 2 and lim.budget == 49


async def test_no_retry_after_pauses_an_adaptive_limiter_for_a_window() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    lim.on_rate_limited(None)
    assert lim.snapshot().paused_until_ms == clock.now_ms() + 60_000


def test_recovery_is_slow_below_the_wall_then_doubles_and_stops_at_the_advertised() -> None:
    b = AdaptiveBudget(1000, WINDOW_MS)
    t = 0
    assert b.cut(t, level=100, pause_until_ms=t + 5000)
    assert (b.effective, b.wall) == (70, 100)
    t += 5000
    seen = []
    for _ in range(12):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
        seen.append(b.effective)
    # +5 (5% of the wall) a window up to the wall, then a step that doubles each window
    assert seen == [75, 80, 85, 90, 95, 100, 105, 115, 135, 175, 255, 415]
    for _ in range(10):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
    assert b.effective == 1000  # never past the advertised budget


def test_no_raise_without_a_window_held_back_or_while_someone_else_spends() -> None:
    b = AdaptiveBudget(1000, WINDOW_MS)
    b.cut(0, level=100, pause_until_ms=0)
    b.maybe_raise(WINDOW_MS)  # the budget held nothing back: no reason to raise
    assert b.effective == 70
    b.limited = b.contended = True
    b.maybe_raise(2 * WINDOW_MS)
    assert b.effective == 70
    b.limited = True
    b.maybe_raise(2 * WINDOW_MS + 59_999)  # less than a window since the last look
    assert b.effective == 70
    b.maybe_raise(3 * WINDOW_MS)
    assert b.effective == 75


def test_the_cut_never_goes_below_the_minimum() -> None:
    b = AdaptiveBudget(6000, WINDOW_MS)
    assert b.min_budget == 6
    b.cut(0, level=2, pause_until_ms=0)
    assert b.effective == 6
    with pytest.raises(ValueError):
        AdaptiveBudget(100, WINDOW_MS, decrease=1.0)


async def test_the_limiter_waits_on_a_full_budget_and_takes_the_raise() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)
    lim.on_rate_limited(1)
    await clock.advance(60)  # the pause is over and the books are empty again
    await spend(lim, 7)  # 70: the cut budget is full
    waiter = asyncio.create_task(spend(lim, 1))
    await settle()
    assert not waiter.done()  # held back by the budget: this window counts for a raise
    await clock.advance(60)
    await settle()
    assert waiter.done() and lim.budget == 75


async def test_above_the_confirmed_level_requests_go_a_few_at_a_time() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    first = await lim.acquire(10)
    second = asyncio.create_task(lim.acquire(10))
    await settle()
    assert not second.done()  # nothing confirmed yet: one request at a time
    first.release()
    await settle()
    assert second.done()
    second.result().release()
    await spend(lim, 88)  # 900 answered: 5% of it (45) but two requests at most beyond it
    grants = [await lim.acquire(10), await lim.acquire(10)]
    third = asyncio.create_task(lim.acquire(10))
    await settle()
    assert not third.done()
    for g in grants:
        g.release()
    await settle()
    assert third.done()


async def test_a_fixed_budget_is_never_cut_and_keeps_its_pace_without_retry_after() -> None:
    clock = FakeClock()
    lim = WeightLimiter(100, 60, clock=clock)
    await spend(lim, 5)
    lim.on_rate_limited(None)
    lim.on_rate_limited(3)
    snap = lim.snapshot()
    assert (snap.adaptive, snap.effective_budget, snap.advertised_budget, snap.cuts,
            snap.rate_limited) == (False, 100, 100, 0, 2)
    assert snap.paused_until_ms == clock.now_ms() + 3000
    await clock.advance(3)
    held = [asyncio.create_task(lim.acquire(10)) for _ in range(3)]
    await settle()
    assert all(t.done() for t in held)  # concurrent grants: no probing when configured


async def test_a_418_stops_the_source_for_its_retry_after_and_is_not_retried() -> None:
    clock = FakeClock()
    lim = WeightLimiter(100, 60, clock=clock, name="bin")
    lim.on_banned(120)
    with pytest.raises(BannedError) as info:
        await lim.acquire(1)
    assert info.value.retry_after == 120 and "source bin: banned" in str(info.value)
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        await lim.acquire(1)

    with pytest.raises(BannedError):
        await call_with_retry(attempt, policy=RetryPolicy(max_attempts=5), clock=clock)
    assert calls == 1 and clock.slept == []  # failed fast, no sleeping through the ban
    assert lim.snapshot().banned == 1
    await clock.advance(120)
    assert (await lim.acquire(1)).weight == 1


async def test_weight_reported_beyond_our_books_holds_the_raise_back() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)
    lim.on_rate_limited(1)
    lim.observe_used(50)  # the server counts weight we did not send: books unchanged
    assert lim.aimd is not None and not lim.aimd.contended
    lim.observe_used(500)
    assert lim.aimd.contended


async def test_a_late_429_for_a_request_granted_before_the_cut_is_the_same_episode() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 40)  # enough confirmed for two requests in flight
    answered = asyncio.Event()

    async def request(late: bool) -> None:
        async with lim.reserve(10):
            if late:
                await answered.wait()  # its 429 comes back after the pause is over
            lim.on_rate_limited(1)

    slow = asyncio.create_task(request(late=True))
    await settle()
    await request(late=False)
    assert lim.snapshot().cuts == 1
    await clock.advance(2)
    answered.set()
    await slow
    assert lim.snapshot().cuts == 1 and lim.rate_limited == 2
    fresh = asyncio.create_task(request(late=False))  # granted after the cut
    await clock.advance(61)  # the books of the first episode expire
    await fresh
    assert lim.snapshot().cuts == 2  # a new episode
