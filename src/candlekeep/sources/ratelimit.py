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

With ``adaptive=True`` (no budget configured) the budget is the exchange's advertised one
only to start with: ``AdaptiveBudget`` cuts it on a 429 and raises it back slowly (see
``adaptive_budget``). A configured budget is fixed and never adapts. Either way, a 429 or
418 pauses every grant until its Retry-After, and during a 418 ban ``acquire`` fails fast
with BannedError.

Time comes from the injected Clock, so tests drive the limiter with a FakeClock and never
sleep for real.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.errors import BannedError
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.adaptive_budget import AdaptiveBudget

log = logging.getLogger("candlekeep.sources")

_current_grant: ContextVar[Grant | None] = ContextVar("current_grant", default=None)
"""The grant of the request this task is making inside ``reserve``: a 429 hook reads it to
tell a request granted before the last cut (same episode) from a new one."""


class Grant:
    """Weight spent on one request; ``release`` it when the reply is back."""

    __slots__ = ("_limiter", "granted_ms", "released", "weight")

    def __init__(self, limiter: WeightLimiter, weight: int, granted_ms: int) -> None:
        self._limiter = limiter
        self.weight = weight
        self.granted_ms = granted_ms
        self.released = False

    def release(self, ok: bool = True) -> None:
        """``ok``: the reply was a success (evidence for an adaptive budget)."""
        if not self.released:
            self.released = True
            self._limiter._release(self, ok)


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """A limiter's state for health views; weights are per ``window_s``."""

    adaptive: bool
    effective_budget: int
    """The budget grants are paced to now."""
    advertised_budget: int
    """The exchange's published budget (adaptive), or the configured one (fixed)."""
    window_s: float
    used: int
    """Weight on the books: in flight, or answered within a window."""
    in_flight: int
    cuts: int
    """Times an adaptive budget was cut (one per 429 episode)."""
    rate_limited: int
    """429 replies received."""
    banned: int
    """418 replies received."""
    wall: int | None
    """Weight on the books when the last cut's 429 came (adaptive)."""
    paused_until_ms: int | None
    banned_until_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WeightLimiter:
    """Grants request weight so that no window of ``window_s`` ever sees more than ``budget``.

    ``max_rps`` additionally spaces grants at least ``1 / max_rps`` seconds apart.
    ``margin_s`` stretches the window (for clock-rate or counting differences; 0 by
    default, as the release rule already covers delays). Waiters are served first come,
    first served, so a heavy request is not starved by light ones. ``adaptive``: ``budget``
    is the advertised budget, a starting point that 429s cut (``AdaptiveBudget``);
    ``name`` names the source in errors.
    """

    def __init__(
        self,
        budget: int,
        window_s: float,
        *,
        clock: Clock | None = None,
        max_rps: float | None = None,
        margin_s: float = 0.0,
        adaptive: bool = False,
        name: str = "",
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
        self.name = name
        self.advertised = budget
        self.aimd = AdaptiveBudget(budget, self._window_ms) if adaptive else None
        self.rate_limited = 0
        self.banned = 0
        self._banned_until_ms = 0
        self._accepted_used: deque[tuple[int, int]] = deque()  # (expiry_ms, used)

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
        books = self._pending + self._expiring_weight
        excess = books + need - self.budget
        aimd = self.aimd
        if excess <= 0:
            if (aimd is not None and self._pending
                    and books + need - aimd.confirmed > aimd.probe_room(need)):
                return None  # beyond what the server has accepted: a few at a time
            return 0
        if aimd is not None:
            aimd.limited = True
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
                if now < self._banned_until_ms:
                    raise BannedError(
                        f"{self._who()}banned by the exchange (HTTP 418): nothing is sent "
                        f"until {fmt_ms(self._banned_until_ms)}",
                        (self._banned_until_ms - now) / 1000)
                if self.aimd is not None:
                    self.aimd.maybe_raise(now)
                    self.budget = self.aimd.effective
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
            return Grant(self, weight, now)

    @asynccontextmanager
    async def reserve(self, weight: int = 1) -> AsyncIterator[Grant]:
        """``async with limiter.reserve(w):`` around one request."""
        grant = await self.acquire(weight)
        token = _current_grant.set(grant)
        ok = False
        try:
            yield grant
            ok = True
        finally:
            _current_grant.reset(token)
            grant.release(ok)

    def _release(self, grant: Grant, ok: bool = True) -> None:
        self._pending -= grant.weight
        self._add_expiring(self.clock.now_ms() + self._window_ms, grant.weight)
        if ok and self.aimd is not None:
            self.aimd.succeeded(self._expiring_weight)
        self._released.set()

    def observe_used(self, used: int, accepted: bool = True) -> None:
        """Reconcile with the weight the server reports as used in its current window
        (``accepted``: on a reply that was not a 429 or 418).

        The server only counts what reached it, so more than our own books means someone
        else spends from the same budget (another process on this IP): book the difference
        for a window so that our pace leaves room for it. An adaptive limiter also keeps
        the counts of accepted replies for a window: where a 429 then comes, the server had
        accepted that much, a truer wall than our books, which count a sliding window and
        so overstate the server's aligned one.
        """
        now = self.clock.now_ms()
        self._expire(now)
        extra = used - (self._pending + self._expiring_weight)
        if extra > 0:
            log.debug("rate limiter reconciled extra_weight=%d used=%d", extra, used)
            self._add_expiring(now + self._window_ms, extra)
            if self.aimd is not None:
                self.aimd.contended = True
        if accepted and self.aimd is not None:
            self._accepted_used.append((now + self._window_ms, used))

    def _server_level(self, now_ms: int) -> int | None:
        """The most weight the server reported on an accepted reply within a window."""
        seen = self._accepted_used
        while seen and seen[0][0] <= now_ms:
            seen.popleft()
        return max((used for _, used in seen), default=None)

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (the server said Retry-After)."""
        until = self.clock.now_ms() + int(seconds * 1000)
        self._paused_until_ms = max(self._paused_until_ms, until)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429 came back: pause for its Retry-After (a window when an adaptive limiter
        got none: the server's window must roll over) and, when adaptive, cut the budget
        once per episode. A fixed limiter without a Retry-After keeps its pace."""
        self.rate_limited += 1
        if retry_after is None and self.aimd is not None:
            retry_after = self._window_ms / 1000
        if retry_after is not None:
            self.pause(retry_after)
        self._cut(banned=False)

    def _cut(self, *, banned: bool) -> None:
        """Cut an adaptive budget once per episode at the level the reply met: our books,
        or less when the server reported accepting less (``observe_used``)."""
        if self.aimd is None:
            return
        now = self.clock.now_ms()
        self._expire(now)
        level = self._pending + self._expiring_weight
        grant = _current_grant.get()  # the request this reply answers, when in reserve()
        ours = grant if grant is not None and grant._limiter is self else None
        server = self._server_level(now)
        if server is not None:
            level = min(level, server + (ours.weight if ours else 1))
        until = max(self._paused_until_ms, self._banned_until_ms)
        if self.aimd.cut(now, level, until, ours.granted_ms if ours else None,
                         banned=banned):
            self.budget = self.aimd.effective
            log.warning("rate budget cut%s budget=%d wall=%d advertised=%d cuts=%d",
                        f" source={self.name}" if self.name else "", self.budget,
                        self.aimd.wall or 0, self.advertised, self.aimd.cuts)

    def on_banned(self, retry_after: float | None) -> None:
        """A 418 came back: nothing is sent until its Retry-After (a window if none);
        ``acquire`` fails fast with BannedError meanwhile. An adaptive budget is cut, as a
        new episode even during a 429's: the ban says that episode went on too long."""
        self.banned += 1
        seconds = retry_after if retry_after is not None else self._window_ms / 1000
        until = self.clock.now_ms() + int(seconds * 1000)
        self._banned_until_ms = max(self._banned_until_ms, until)
        self.pause(seconds)
        self._cut(banned=True)
        log.error("banned by the exchange (HTTP 418)%s until=%s",
                  f" source={self.name}" if self.name else "", fmt_ms(self._banned_until_ms))

    def snapshot(self) -> LimiterSnapshot:
        """The limiter's state now (read by the providers-health view)."""
        now = self.clock.now_ms()
        self._expire(now)
        aimd = self.aimd
        return LimiterSnapshot(
            adaptive=aimd is not None, effective_budget=self.budget,
            advertised_budget=self.advertised, window_s=self.window_s,
            used=self._pending + self._expiring_weight, in_flight=self._pending,
            cuts=aimd.cuts if aimd else 0, rate_limited=self.rate_limited,
            banned=self.banned, wall=aimd.wall if aimd else None,
            paused_until_ms=self._paused_until_ms if self._paused_until_ms > now else None,
            banned_until_ms=self._banned_until_ms if self._banned_until_ms > now else None)

    def _who(self) -> str:
        return f"source {self.name}: " if self.name else ""
