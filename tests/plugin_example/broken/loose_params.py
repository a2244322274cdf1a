"""A job type whose params model ignores unknown keys, so a typo in a job's params would
silently fall back to a default."""

from __future__ import annotations

from pydantic import BaseModel

from candlekeep.jobs.base import JobContext, JobResult, JobType


class LooseParams(BaseModel):
    limit: int = 10


async def run(ctx: JobContext, params: LooseParams) -> JobResult:
    return JobResult()


LOOSE = JobType("example_loose", LooseParams, run)  # type: ignore[arg-type]
