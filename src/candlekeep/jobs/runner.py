"""Running one job now, in this process, recorded in run history like a scheduled run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from candlekeep.core.errors import CandlekeepError, ConfigError
from candlekeep.jobs.base import (
    JobContext,
    JobResult,
    JobType,
    NullProgress,
    Params,
    ProgressSink,
)
from candlekeep.jobs.registry import get_job_type, job_types
from candlekeep.jobs.runtime import Runtime
from candlekeep.sources.base import metered


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
    """Run a job type within the concurrency limits and under its own request meter: the one
    call the CLI and the scheduler both go through."""
    used = jt.sources(ctx, params) if jt.sources else set()
    async with ctx.runtime.limits.slot(used):
        with metered() as meter:
            result = await jt.run(ctx, params)
    result.requests = meter.requests
    return result


async def execute(
    rt: Runtime,
    job_type: str,
    params: Params,
    *,
    job_name: str | None = None,
    dry_run: bool = False,
    progress: ProgressSink | None = None,
    record: bool = True,
    cancel: asyncio.Event | None = None,
) -> JobResult:
    """Run ``job_type`` once; unless ``dry_run``, the run lands in history (trigger manual)."""
    jt = get_job_type(job_type)
    if jt is None:
        raise CandlekeepError(f"unknown job type {job_type!r}")
    name = job_name or job_type
    ctx = JobContext(
        runtime=rt, job_name=name, log=logging.getLogger(f"candlekeep.jobs.{job_type}"),
        dry_run=dry_run, progress=progress or NullProgress(), cancel=cancel or asyncio.Event(),
    )
    run_id = None
    if record and not dry_run:
        now = rt.clock.now_ms()
        run_id = rt.state.start_run(name, now, rt.node, now, trigger="manual")
    try:
        result = await invoke(jt, ctx, params)
    except BaseException as exc:
        if run_id is not None:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt) \
                else "failed"
            rt.state.finish_run(run_id, status, rt.clock.now_ms(), error=repr(exc)[:2000])
        raise
    if run_id is not None:
        rt.state.finish_run(
            run_id, "success" if result.ok else "failed", rt.clock.now_ms(),
            rows_written=result.rows_written, requests=result.requests,
            error="; ".join(result.errors)[:2000] or None,
        )
    return result
