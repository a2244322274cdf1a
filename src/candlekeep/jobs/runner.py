"""Calling a job type: its params from raw values, and the metered call itself."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from candlekeep.core.errors import ConfigError
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.registry import get_job_type, job_types
from candlekeep.sources.metering import metered


def build_params(job_type: str, params: dict[str, Any], where: str = "params") -> Params:
    jt = get_job_type(job_type)
    if jt is None:
        raise ConfigError("<command line>", "type", f"unknown job type {job_type!r}",
                          f"known: {', '.join(sorted(job_types()))}")
    try:
        return jt.params.model_validate(params)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(x) for x in e["loc"])
        raise ConfigError("<command line>", f"{where}.{key}", e["msg"]) from None


async def invoke(jt: JobType, ctx: JobContext, params: Params) -> JobResult:
    """Run a job type under its own request meter. The scheduler's run path calls this once
    it holds the run's slots; nothing else runs job types."""
    with metered() as meter:
        result = await jt.run(ctx, params)
    result.requests = meter.requests
    return result
