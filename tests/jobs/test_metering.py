"""A run counts its own requests, even while another job uses the same source."""

from __future__ import annotations

import asyncio

from candlekeep.config.models import RetriesConfig
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.scheduler.runpath import execute_attempt
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
    other = JobSpec(name="pages", type="pages", job_type=PAGES, params=Pages(pages=3),
                    trigger=None)
    one, two = await asyncio.gather(execute_attempt(rt, spec, asyncio.Event()),
                                    execute_attempt(rt, other, asyncio.Event()))
    assert one.status == "success" and one.result is not None and two.result is not None
    assert one.result.requests == 2
    assert two.result.requests == 3
    assert rt.source("sim").stats.requests == 5
