"""Shared test helpers: a fake clock that lets everything runnable run before time moves,
job types built from closures, and an engine wired to a fresh SQLite state DB."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from candlekeep.config.models import Config, RetriesConfig
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.engine import Engine, EngineOptions
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import cron_trigger


async def settle() -> None:
    """Yield until nothing on the loop is runnable (no threads are involved in these tests:
    the engine runs its state-DB calls inline)."""
    loop = asyncio.get_running_loop()
    for _ in range(100_000):
        await asyncio.sleep(0)
        if not loop._ready:  # type: ignore[attr-defined]
            return
    raise AssertionError("the loop never settled")


class SettlingClock(FakeClock):
    """FakeClock whose ``run_until`` lets every woken task run to its next wait before
    time moves on, so a tick handled at 10:00 is seen at 10:00, not at the next sleeper's
    deadline."""

    async def run_until(self, target_ms: int) -> None:
        await settle()
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= target_ms:
            deadline, _, fut = heapq.heappop(sleepers)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await settle()
        self._now = max(self._now, target_ms)
        await settle()


def ms(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class P(Params):
    pass


class Overlap:
    """A job body that sleeps on the clock and records how many copies ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = 0
        self.peak = 0

    async def __call__(self, ctx: JobContext) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await ctx.clock.sleep(self.seconds)
        finally:
            self.active -= 1


JobBody = Callable[[JobContext], Awaitable[JobResult | None]]


def spec(name: str, schedule: str | None, body: JobBody | None = None, *,
         tz: str = "UTC", misfire: str = "coalesce", grace_s: float | None = None,
         max_concurrent: int = 1, timeout_s: float | None = None, attempts: int = 1,
         backoff_s: float = 30.0, max_backoff_s: float = 600.0,
         enabled: bool = True, sources: set[str] | None = None) -> JobSpec:
    async def run(ctx: JobContext, _params: Any) -> JobResult:
        out = await body(ctx) if body is not None else None
        return out if out is not None else JobResult()

    return JobSpec(
        name=name, type="test", params=P(),
        job_type=JobType("test", P, run, sources=(lambda _c, _p: sources) if sources else None),
        trigger=cron_trigger(schedule, tz) if schedule else None, enabled=enabled,
        misfire=misfire, grace_ms=None if grace_s is None else int(grace_s * 1000),
        max_concurrent=max_concurrent, timeout_s=timeout_s,
        retries=RetriesConfig(attempts=attempts, backoff=backoff_s, max_backoff=max_backoff_s),
    )


def runtime(tmp_path: Path, clock: FakeClock, node: str = "n1",
            state: str | None = None, **config: Any) -> Runtime:
    cfg = Config.model_validate({"data_dir": tmp_path,
                                 "state": state or f"sqlite:///{tmp_path / 'state.db'}",
                                 **config})
    return Runtime(cfg, clock=clock, node=node)


def engine(rt: Runtime, specs: list[JobSpec], **options: Any) -> Engine:
    # Fake clocks: leases by the injected clock on PostgreSQL too.
    opts = {"db_in_thread": False, "stop_timeout_s": 60.0, "heartbeat_s": 60.0,
            "db_clock": False, **options}
    return Engine(rt, specs, EngineOptions(**opts))


@contextlib.asynccontextmanager
async def running(eng: Engine, stop_timeout_s: float = 0.0) -> AsyncIterator[Engine]:
    task = asyncio.ensure_future(eng.run())
    await settle()
    try:
        yield eng
    finally:
        eng.request_stop(stop_timeout_s)
        await settle()
        clock = eng.clock
        assert isinstance(clock, FakeClock)
        # let the drain's clock waits elapse
        for _ in range(100):
            if task.done():
                break
            await clock.advance(max(stop_timeout_s, 1.0))
        await task
