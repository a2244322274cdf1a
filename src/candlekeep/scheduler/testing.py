"""Job types for tests and benchmarks, registered only when asked (``CANDLEKEEP_TEST_JOBS=1``).

They let a real daemon process be exercised without exchanges or stores: ``noop`` measures
pure scheduling overhead, ``sleep`` occupies a slot (overlap, timeouts, stop), ``fail``
fails (retries).
"""

from __future__ import annotations

from pydantic import Field

from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.registry import register


class NoopParams(Params):
    pass


class SleepParams(Params):
    seconds: float = Field(default=1.0, ge=0)
    fail: bool = False


class FailParams(Params):
    message: str = "failed on purpose"


async def noop(ctx: JobContext, params: NoopParams) -> JobResult:
    """Does nothing: the cost of scheduling alone."""
    return JobResult()


async def sleep(ctx: JobContext, params: SleepParams) -> JobResult:
    """Sleeps on the runtime clock, then succeeds (or fails with ``fail: true``)."""
    if ctx.dry_run:
        return JobResult(warnings=[f"would sleep {params.seconds}s"])
    await ctx.clock.sleep(params.seconds)
    if params.fail:
        return JobResult(errors=[f"slept {params.seconds}s, then failed on purpose"])
    return JobResult(rows_written=1)


async def fail(ctx: JobContext, params: FailParams) -> JobResult:
    """Raises at once."""
    raise RuntimeError(params.message)


def register_test_jobs() -> None:
    register(JobType("noop", NoopParams, noop, "does nothing (tests, benchmarks)"))
    register(JobType("sleep", SleepParams, sleep, "sleeps (tests)"))
    register(JobType("fail", FailParams, fail, "fails (tests)"))
