"""A JobType object, not registered at import, named like a built-in."""

from __future__ import annotations

from candlekeep.jobs.base import JobContext, JobResult, JobType, Params


class NoParams(Params):
    pass


async def scan(ctx: JobContext, params: NoParams) -> JobResult:
    return JobResult()


GAPS_SCAN = JobType("gaps_scan", NoParams, scan)
