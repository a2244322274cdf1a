"""Two job types, one registered each way an entry point may name it."""

from __future__ import annotations

from pydantic import Field

from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.registry import job_type


class EchoParams(Params):
    message: str
    times: int = Field(default=1, ge=1, le=100)


@job_type("example_echo", EchoParams)
async def echo(ctx: JobContext, params: EchoParams) -> JobResult:
    """Logs a message (an example plug-in)."""
    if ctx.dry_run:
        return JobResult(warnings=[f"would say {params.message!r} {params.times} time(s)"])
    for _ in range(params.times):
        ctx.log.info("job=%s says %s", ctx.job_name, params.message)
    return JobResult(details={"said": [params.message] * params.times})


class CountdownParams(Params):
    seconds: int = Field(ge=0, le=3600)


async def countdown(ctx: JobContext, params: CountdownParams) -> JobResult:
    """Waits ``seconds`` on the runtime clock, one second at a time, so that a stop request
    ends it at the next second with what it had done, rather than mid-step."""
    if ctx.dry_run:
        return JobResult(warnings=[f"would count down {params.seconds}s"])
    for left in range(params.seconds, 0, -1):
        if ctx.cancel.is_set():
            return JobResult(errors=[f"cancelled with {left}s left"],
                             details={"left": left})
        await ctx.clock.sleep(1)
    return JobResult(details={"left": 0})


COUNTDOWN = JobType("example_countdown", CountdownParams, countdown,
                    "Counts down on the runtime clock (an example plug-in).")
