"""Freshness: judge every configured series and watched dataset (``freshness:`` rules) and
record the verdicts, which the API, the dashboard, alerts and reports read."""

from __future__ import annotations

import asyncio

from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type
from candlekeep.state.statuses import FreshnessStatus


class FreshnessParams(Params):
    fail_when_stale: bool = False
    """Fail the run when anything is stale, missing or unreadable (a cron-style gate);
    by default the run succeeds and alert rules on ``freshness`` do the telling."""


@job_type("freshness", FreshnessParams,
          "Age of the newest row of every series and watched dataset against its threshold.")
async def freshness(ctx: JobContext, p: FreshnessParams) -> JobResult:
    from candlekeep.freshness.check import run_check

    if ctx.dry_run:
        return JobResult(details={"plan": "judge freshness (nothing recorded)"})
    result = await asyncio.to_thread(run_check, ctx.runtime, ctx.clock.now_ms())
    res = JobResult(details={s.value: result.count(s) for s in FreshnessStatus})
    res.details["transitions"] = [
        {"kind": t.kind, "store": t.store, "subject": t.subject, "from": t.before,
         "to": t.after} for t in result.transitions]
    bad = [v for v in result.verdicts if v.status != FreshnessStatus.OK]
    for v in bad:
        line = f"{v.status}: {v.store}/{v.subject}" + (f" ({v.detail})" if v.detail else "")
        (res.errors if p.fail_when_stale else res.warnings).append(line)
    for t in result.transitions:
        ctx.log.info("freshness changed store=%s subject=%s from=%s to=%s", t.store,
                     t.subject, t.before, t.after)
    return res
