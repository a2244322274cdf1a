"""A second plug-in job type named like ``plugin_example.jobs.echo``."""

from __future__ import annotations

from candlekeep.jobs.base import JobContext, JobResult, JobType, Params


class NoParams(Params):
    pass


async def echo(ctx: JobContext, params: NoParams) -> JobResult:
    return JobResult()


ECHO = JobType("example_echo", NoParams, echo)
