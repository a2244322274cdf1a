"""Client-side rate limiting by request weight, safe against any server window alignment.

Exchanges count weight in fixed windows (Binance: per clock minute) at the moment a request
*arrives*, which is somewhere between the moment we send it and the moment its reply is
back. A request therefore holds its weight from when it is granted until one full window
after its reply: every request that could share a server window with a new one is still
on the books when the new one is granted, so no server window, whatever its alignment and
whatever the network or server queueing delay, ever counts more than the budget. (Expiring
weight one window after the *grant* instead is not enough: a burst queued at the server
arrives spread out and straddles a window boundary.) Under saturation the whole budget is
still spent every window plus one round trip, so the achieved rate approaches
``budget / window``.

Time comes from the injected Clock, so tests drive the limiter with a FakeClock and never
sleep for real.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from candlekeep.core.clock import Clock, SystemClock

log = logging.getLogger("candlekeep.sources")


class Grant:
    """Weight spent on one request; ``release`` it when the reply is back."""

    __slots__ = ("_limiter", "released", "weight")

    def __init__(self, limiter: WeightLimiter, weight: int) -> None:
        self._limiter = limiter
        self.weight = weight
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limiter._release(self)


class WeightLimiter:
    """Grants request weight so that no window of ``window_s`` ever sees more than ``budget``.

    ``max_rps`` additionally spaces grants at least ``1 / max_rps`` seconds apart.
    ``margin_s`` stretches the window (for clock-rate or counting differences; 0 by
    default, as the release rule already covers delays). Waiters are served first come,
    first served, so a heavy request is not starved by light ones.
    """

    def __init__(
        self,
        budget: int,
        window_s: float,
        *,
        clock: Clock | None = None,
        max_rps: float | None = None,
        margin_s: float = 0.0,
    ) -> None:
        if budget <= 0 or window_s <= 0:
            raise ValueError("rate limit budget and window must be positive")
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self.budget = budget
        self.window_s = window_s
        self.clock: Clock = clock or SystemClock()
        self.max_rps = max_rps
        self._window_ms = round((window_s + margin_s) * 1000)
        self._spacing_ms = round(1000 / max_rps) if max_rps else 0
        # (expiry_ms, weight); every expiry is "now + window" when booked and the clock
        # never goes back, so appending keeps the deque sorted.
        self._expiring: deque[tuple[int, int]] = deque()
        self._pending = 0  # weight of granted requests whose reply is not back yet
        self._expiring_weight = 0
        self._released = asyncio.Event()
        self._next_allowed_ms = 0
        self._paused_until_ms = 0
        self._lock = asyncio.Lock()
        self.granted_weight = 0
        self.granted_requests = 0
        self.waited_s = 0.0

    @property
    def window_ms(self) -> int:
        return self._window_ms

    def used(self) -> int:
        """Weight on the books now: requests in flight plus those within a window of their
        reply."""
        self._expire(self.clock.now_ms())
        return self._pending + self._expiring_weight

    @property
    def in_flight_weight(self) -> int:
        return self._pending

    def _expire(self, now_ms: int) -> None:
        books = self._expiring
        while books and books[0][0] <= now_ms:
            self._expiring_weight -= books.popleft()[1]

    def _add_expiring(self, expiry_ms: int, weight: int) -> None:
        if self._expiring and expiry_ms < self._expiring[-1][0]:
            expiry_ms = self._expiring[-1][0]  # a clock that stepped back: stay sorted
        self._expiring.append((expiry_ms, weight))
        self._expiring_weight += weight

    def _wait_ms(self, weight: int, now_ms: int) -> int | None:
        """Milliseconds until ``weight`` fits; 0 if it fits now; None if only a release of
        an in-flight request can make room."""
        if now_ms < self._paused_until_ms:
            return self._paused_until_ms - now_ms
        if self._spacing_ms and now_ms < self._next_allowed_ms:
            return self._next_allowed_ms - now_ms
        need = min(weight, self.budget)  # an oversized request waits for an empty book
        excess = self._pending + self._expiring_weight + need - self.budget
        if excess <= 0:
            return 0
        if self._expiring_weight < excess:
            return None
        freed = 0
        for expiry, w in self._expiring:
            freed += w
            if freed >= excess:
                return max(1, expiry - now_ms)
        return None  # unreachable: the expiring weight covers the excess

    async def acquire(self, weight: int = 1) -> Grant:
        """Wait until ``weight`` can be spent without breaking the budget, then spend it.

        The caller must ``release()`` the grant when the reply arrives (or the request
        fails); ``reserve`` does that for a block.
        """
        async with self._lock:
            while True:
                now = self.clock.now_ms()
                self._expire(now)
                wait_ms = self._wait_ms(weight, now)
                if wait_ms == 0:
                    break
                if wait_ms is None:
                    self._released.clear()
                    await self._released.wait()
                    continue
                self.waited_s += wait_ms / 1000
                await self.clock.sleep(wait_ms / 1000)
            self._pending += weight
            if self._spacing_ms:
                self._next_allowed_ms = now + self._spacing_ms
            self.granted_weight += weight
            self.granted_requests += 1
            return Grant(self, weight)

    @asynccontextmanager
    async def reserve(self, weight: int = 1) -> AsyncIterator[Grant]:
        """``async with limiter.reserve(w):`` around one request."""
        grant = await self.acquire(weight)
        try:
            yield grant
        finally:
            grant.release()

    def _release(self, grant: Grant) -> None:
        self._pending -= grant.weight
        self._add_expiring(self.clock.now_ms() + self._window_ms, grant.weight)
        self._released.set()

    def observe_used(self, used: int) -> None:
        """Reconcile with the weight the server reports as used in its current window.

        The server only counts what reached it, so more than our own books means someone
        else spends from the same budget (another process on this IP): book the difference
        for a window so that our pace leaves room for it.
        """
        now = self.clock.now_ms()
        self._expire(now)
        extra = used - (self._pending + self._expiring_weight)
        if extra > 0:
            log.debug("rate limiter reconciled extra_weight=%d used=%d", extra, used)
            self._add_expiring(now + self._window_ms, extra)

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (the server said Retry-After)."""
        until = self.clock.now_ms() + int(seconds * 1000)
        self._paused_until_ms = max(self._paused_until_ms, until)
