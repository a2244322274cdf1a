"""A coroutine function an entry point names without ``@job_type``: it has no name or
params model, so it cannot be a job type."""

from __future__ import annotations

from candlekeep.jobs.base import JobContext, JobResult


async def forgot_decorator(ctx: JobContext, params: object) -> JobResult:
    return JobResult()
