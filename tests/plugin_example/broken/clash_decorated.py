"""A module whose second job type takes a built-in's name: importing it fails, and the
registry must keep neither of its job types (a failed plug-in contributes nothing)."""

from __future__ import annotations

from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type


class NoParams(Params):
    pass


@job_type("example_before_clash", NoParams)
async def before_clash(ctx: JobContext, params: NoParams) -> JobResult:
    """Would be fine on its own."""
    return JobResult()


@job_type("backfill", NoParams)
async def backfill(ctx: JobContext, params: NoParams) -> JobResult:
    """Takes a built-in's name."""
    return JobResult()
