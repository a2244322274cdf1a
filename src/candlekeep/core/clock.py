"""The one clock every component asks for time, so tests move time instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time, epoch milliseconds UTC."""
        ...

    def now(self) -> datetime:
        """Wall-clock time as an aware UTC datetime."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to.

    ``sleep`` parks the caller until ``advance`` (or ``run_until``) moves time past its
    wake-up point; sleepers wake in time order, each seeing ``now`` equal to its deadline.
    With ``autoadvance=True`` a sleep moves time forward at once, for code that only sleeps
    between retries and has nothing running concurrently.
    """

    def __init__(self, start_ms: int = 1_735_689_600_000, *, autoadvance: bool = False) -> None:
        self._now = start_ms
        self._autoadvance = autoadvance
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return self._now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now / 1000, UTC)

    def set(self, ts_ms: int) -> None:
        self._now = ts_ms

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self._autoadvance:
            self._now += int(seconds * 1000)
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + int(seconds * 1000), next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())

    def next_wakeup_ms(self) -> int | None:
        live = [t for t, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each due sleeper at its own deadline."""
        await self.run_until(self._now + int(seconds * 1000))

    async def run_until(self, target_ms: int) -> None:
        while self._sleepers and self._sleepers[0][0] <= target_ms:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            # Let the woken task (and whatever it schedules) run before the next wake-up.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = max(self._now, target_ms)
        await asyncio.sleep(0)
