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


def test_recovery_is_slow_to_the_wall_holds_then_probes_and_doubles_past_it() -> None:
    b = AdaptiveBudget(1000, WINDOW_MS)
    t = 0
    assert b.cut(t, level=100, pause_until_ms=t + 5000)
    assert (b.effective, b.wall, b.hold) == (70, 100, 99)
    t += 5000
    seen = []
    for _ in range(16):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
        seen.append(b.effective)
    # +5 (5% of the wall) a window up to just below the wall, 4 quiet windows there, one
    # step above; a window of use there without a 429: the wall moved, the step doubles
    assert seen == [75, 80, 85, 90, 95, 99, 99, 99, 99, 104, 109, 119, 139, 179, 259, 419]
    assert b.hold is None
    for _ in range(10):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
    assert b.effective == 1000  # never past the advertised budget


def test_a_429_near_the_wall_goes_back_to_the_hold_and_doubles_the_quiet_period() -> None:
    b = AdaptiveBudget(1000, WINDOW_MS)
    b.cut(0, level=100, pause_until_ms=0)
    t, seen = 0, []
    for _ in range(10):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
        seen.append(b.effective)
    assert seen[-1] == 104  # the probe
    assert b.cut(t + 1000, level=104, pause_until_ms=t + 2000)
    assert (b.effective, b.hold, b.meets, b.wall) == (99, 99, 2, 104)  # no 0.7 cut
    t += 2000
    seen = []
    for _ in range(8):
        t += WINDOW_MS
        b.limited = True
        b.maybe_raise(t)
        seen.append(b.effective)
    assert seen == [99] * 7 + [104]  # 8 quiet windows now, then the next probe


def test_no_raise_without_a_window_held_back_or_while_someone_else_spends() -> None:
    b = AdaptiveBudget(1000, WINDOW_MS)
    b.confirmed = 80  # the server accepted 80: the budget climbs up to it, not the wall
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
    b.limited = True
    b.maybe_raise(4 * WINDOW_MS)
    assert (b.effective, b.hold) == (80, 80)


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
    grants = [await lim.acquire(10), await lim.acquire(10)]
    third = asyncio.create_task(lim.acquire(10))
    await settle()
    assert not third.done()  # nothing confirmed yet: the slow start's two at a time
    grants[0].release()
    await settle()
    assert third.done()
    grants[1].release()
    third.result().release()
    await spend(lim, 87)  # 900 answered: two requests at most beyond it
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


async def test_a_418_cuts_as_a_new_episode_even_during_a_429s() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)
    lim.on_rate_limited(5)
    assert lim.budget == 70
    lim.on_banned(120)  # the episode went on too long: cut again
    lim.on_banned(120)  # the rest of the burst: the same ban
    assert lim.snapshot().cuts == 2 and lim.budget == 49 and lim.snapshot().banned == 2


async def test_the_wall_is_what_the_server_accepted_when_it_reports_its_count() -> None:
    clock = FakeClock()
    lim = WeightLimiter(1000, 60, clock=clock, adaptive=True)
    await spend(lim, 10)  # 100 on our books: the server counted 60 of it in its window
    lim.observe_used(60)
    await clock.advance(1)
    async with lim.reserve(10):
        lim.observe_used(70, accepted=False)  # the 429's own count does not say
        lim.on_rate_limited(5)
    assert lim.aimd is not None and lim.aimd.wall == 70  # 60 accepted + this request


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


class WallServer:
    """A server counting arrivals in aligned windows: over ``wall`` (or during the
    Retry-After of the last 429), a 429 whose Retry-After runs to the window's end."""

    def __init__(self, clock: FakeClock, wall: int | None, window_ms: int = WINDOW_MS) -> None:
        self.clock, self.wall, self.window_ms = clock, wall, window_ms
        self.index, self.used, self.retry_until = -1, 0, 0
        self.ok = 0
        self.rate_limited = 0

    def arrive(self, weight: int) -> float | None:
        """None when served, else the Retry-After of the 429."""
        now = self.clock.now_ms()
        if now // self.window_ms != self.index:
            self.index, self.used = now // self.window_ms, 0
        self.used += weight
        if now < self.retry_until or (self.wall is not None and self.used > self.wall):
            self.rate_limited += 1
            self.retry_until = max(self.retry_until, (self.index + 1) * self.window_ms)
            return (self.retry_until - now) / 1000
        self.ok += 1
        return None


async def saturate(lim: WeightLimiter, server: WallServer, windows: int, *,
                   workers: int = 8, rtt_ms: int = 250, report_used: bool = False
                   ) -> list[int]:
    """``workers`` tasks sending back to back for ``windows`` windows, the clock moved by
    hand one round trip at a time; the requests granted in each window."""
    clock = lim.clock
    assert isinstance(clock, FakeClock)
    start, end = clock.now_ms(), clock.now_ms() + windows * WINDOW_MS
    granted: list[int] = []

    async def worker() -> None:
        while True:
            try:
                async with lim.reserve(1) as grant:
                    granted.append(grant.granted_ms)
                    await clock.sleep(rtt_ms / 1000)
                    retry_after = server.arrive(1)
                    if report_used:  # Binance's X-MBX-USED-WEIGHT-1M
                        lim.observe_used(server.used, accepted=retry_after is None)
                    if retry_after is not None:
                        lim.on_rate_limited(retry_after)
                        raise RuntimeError("429")
            except RuntimeError:
                pass

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for t in range(start, end, rtt_ms):
        await clock.run_until(t)
        await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    per = [0] * windows
    for g in granted:
        if g < end:
            per[(g - start) // WINDOW_MS] += 1
    return per


async def test_with_no_wall_adaptive_reaches_the_fixed_pace_within_three_windows() -> None:
    fixed = WeightLimiter(1000, 60, clock=FakeClock())
    adaptive = WeightLimiter(1000, 60, clock=FakeClock(), adaptive=True)
    # (the probes double each window: 2, 4, 8 requests in flight above the accepted level)
    fixed_per = await saturate(fixed, WallServer(fixed.clock, None), 6)  # type: ignore[arg-type]
    adaptive_per = await saturate(
        adaptive, WallServer(adaptive.clock, None), 6)  # type: ignore[arg-type]
    assert min(fixed_per) >= 990  # the budget binds: 8 workers could send 1920 a window
    assert adaptive_per[0] < fixed_per[0]  # a few probes at a time to start with
    assert all(a >= 0.99 * f for a, f in zip(adaptive_per[2:], fixed_per[2:], strict=True))


async def test_a_fixed_hidden_wall_costs_a_few_429s_an_hour_not_one_every_few_windows() -> None:
    lim = WeightLimiter(1000, 60, clock=FakeClock(), adaptive=True)
    server = WallServer(lim.clock, 300)  # type: ignore[arg-type]
    per = await saturate(lim, server, 64, report_used=True)
    # the first meeting, then probes after 4, 8, 16 quiet windows (the next after 32)
    assert lim.aimd is not None and lim.aimd.cuts <= 4 and lim.aimd.meets >= 3
    assert server.rate_limited <= 5
    assert server.ok >= 0.7 * 300 * 64
    assert max(per[8:]) <= 300 + 15  # held at the wall, one step above it at most


def test_slow_start_is_not_held_to_a_share_of_a_small_accepted_level() -> None:
    """A window holding few round trips (slow replies, a short window): 5 % of the weight
    answered in it is less than one request, so before any wall is met only the slow
    start's count bounds the requests in flight; once one is, the share applies."""
    b = AdaptiveBudget(400, 1000)
    t = 0
    for answered in (8, 16, 32, 64):  # each window more answered than the one before
        b.succeeded(answered)
        t += 1000
        b.maybe_raise(t)
    assert b.probe_room(2) == 2 * 16  # 2, 4, 8, 16 requests: doubled each window
    b.cut(t, level=64, pause_until_ms=t + 1000)
    assert b.probe_room(2) == min(int(0.05 * b.confirmed), 2)
