"""A run counts its own requests, even while another job uses the same source."""

from __future__ import annotations

import asyncio
from typing import Any

from candlekeep.config.models import RetriesConfig
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.runner import execute
from candlekeep.scheduler.runner import execute_attempt
from candlekeep.scheduler.spec import JobSpec
from candlekeep.sim.exchange import SimExchange
from tests.jobs.conftest import NOW, START, RuntimeFactory

M = 60_000


class Pages(Params):
    pages: int


async def fetch_pages(ctx: JobContext, p: Pages) -> JobResult:
    """``pages`` single-page fetches, each in its own task like the real jobs do."""
    src = ctx.runtime.source("sim")
    await asyncio.gather(*(
        src.fetch_candles("BTC/USDT", "1m", START + i * 1000 * M, START + (i + 1) * 1000 * M)
        for i in range(p.pages)))
    return JobResult()


PAGES = JobType("pages", Pages, fetch_pages)


async def test_concurrent_runs_on_one_source_count_only_their_own(
    make_runtime: RuntimeFactory,
) -> None:
    ex = SimExchange(7, ["BTC/USDT"], clock=FakeClock(NOW), holes=None, transient=None)
    rt = make_runtime(ex, ["BTC/USDT"], ["1m"])
    from candlekeep.jobs.registry import register

    register(PAGES)
    spec = JobSpec(name="scheduled.pages", type="pages", job_type=PAGES, params=Pages(pages=2),
                   trigger=None, retries=RetriesConfig())
    manual: Any
    attempt, manual = await asyncio.gather(
        execute_attempt(rt, spec, asyncio.Event()),
        execute(rt, "pages", Pages(pages=3)),
    )
    assert attempt.status == "success" and attempt.result is not None
    assert attempt.result.requests == 2
    assert manual.requests == 3
    assert rt.source("sim").stats.requests == 5
    assert rt.state.list_runs("pages")[0].requests == 3
