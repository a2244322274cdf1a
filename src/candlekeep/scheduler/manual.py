"""Starting one run now, from this process: ``candlekeep run``, the data commands, the
demo and system timers all come here, and go through the same run path as a daemon's tick
(runpath.py): the job's slot in the cluster, a heartbeated lease, the timeout, retries,
a guarded record. A dry run writes nothing, not even history.

A system timer (``candlekeep run JOB --timer``, what ``candlekeep install`` writes) runs
the tick of the schedule it fires for: the run is recorded for that tick, so SLOs count
it, and a tick a daemon (or an earlier timer) already ran is not run twice.
"""

from __future__ import annotations

import asyncio
import logging
import random

from candlekeep.core.errors import CandlekeepError
from candlekeep.jobs.base import JobResult, Params, ProgressSink
from candlekeep.jobs.registry import get_job_type
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.records import Owner, TickTaken
from candlekeep.scheduler.runpath import (
    JobBusyError,
    RunHost,
    RunOutcome,
    execute_attempt,
    in_thread,
)
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import DEFAULT_HEARTBEAT_S, LEASE_FACTOR, SchedulerStore
from candlekeep.state.statuses import RunStatus, Trigger

log = logging.getLogger("candlekeep.scheduler")

TIMER_LOOKBACK_MS = 400 * 86_400_000
"""How far back a timer run looks for the tick it stands for (a yearly job, fired late)."""


def adhoc_spec(job_type: str, params: Params, name: str | None = None) -> JobSpec:
    """A job that is not in the config: a data command (``candlekeep backfill`` is job
    ``backfill``). One at a time, no timeout, no retries."""
    jt = get_job_type(job_type)
    if jt is None:
        raise CandlekeepError(f"unknown job type {job_type!r}")
    return JobSpec(name=name or job_type, type=job_type, job_type=jt, params=params,
                   trigger=None)


async def run_now(runtime: Runtime, spec: JobSpec, *, trigger: Trigger = Trigger.MANUAL,
                  dry_run: bool = False, force: bool = False,
                  progress: ProgressSink | None = None,
                  heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                  rng: random.Random | None = None) -> RunOutcome:
    """Run ``spec`` once now; JobBusyError when its slots are taken (unless ``force``)."""
    clock = runtime.clock
    start = clock.now_ms()
    if dry_run:
        attempt = await execute_attempt(runtime, spec, asyncio.Event(), dry_run=True,
                                        progress=progress)
        return RunOutcome(spec.name, attempt.status, attempt.result, attempt.error, None, 1,
                          start, clock.now_ms())
    owner = Owner(runtime.node, runtime.instance, int(heartbeat_s * 1000) * LEASE_FACTOR)
    store = SchedulerStore(runtime.state, owner, rng=rng)
    try:
        async with RunHost(runtime, store, heartbeat_s=heartbeat_s, rng=rng) as host:
            tick = None
            if trigger is Trigger.TIMER:
                tick = await _timer_tick(store, spec, start)
                if tick is None:
                    trigger = Trigger.MANUAL
            try:
                claimed = await host.start_manual(spec, trigger=trigger, scheduled_for=tick,
                                                  force=force)
            except JobBusyError as exc:
                if tick is None:
                    raise
                why = f"skipped: the previous run is still going (run {exc.busy.run_id})"
                await in_thread(store.skip_tick, spec.name, tick, clock.now_ms(), why)
                return RunOutcome(spec.name, RunStatus.SKIPPED, None, None, None, 0, start,
                                  clock.now_ms(), note=why)
            if isinstance(claimed, TickTaken):
                note = (f"this tick already ran (run {claimed.run_id} on node "
                        f"{claimed.node}, {claimed.status})")
                return RunOutcome(spec.name, RunStatus.SKIPPED, None, None, claimed.run_id,
                                  0, start, clock.now_ms(), note=note)
            return await host.run(spec, claimed, progress=progress)
    finally:
        store.dispose()


async def run_adhoc(runtime: Runtime, job_type: str, params: Params, *,
                    dry_run: bool = False, progress: ProgressSink | None = None,
                    name: str | None = None) -> JobResult:
    """A data command's run (``candlekeep backfill`` …): the job type's result, with the
    run's own ending folded in when the job never got to report one. ``name`` is the job
    the run is recorded under (default: the job type's name)."""
    out = await run_now(runtime, adhoc_spec(job_type, params, name), dry_run=dry_run,
                        progress=progress)
    res = out.result if out.result is not None else JobResult()
    if out.status is not RunStatus.SUCCESS and not res.errors:
        res.errors.append(out.error or str(out.status))
    if not out.recorded:
        res.warnings.append(f"this run's ending was not recorded: {out.note or 'see the log'}")
    return res


async def _timer_tick(store: SchedulerStore, spec: JobSpec, now_ms: int) -> int | None:
    """The tick a system timer fires for, with the job registered as of it."""
    if spec.trigger is None:
        log.warning("job %s has no schedule: a timer run counts as a manual run", spec.name)
        return None
    tick = spec.trigger.last_between(now_ms - TIMER_LOOKBACK_MS, now_ms)
    if tick is None:
        log.warning("job %s: no tick of %r in the last 400 days; recorded as manual",
                    spec.name, spec.trigger.expr)
        return None
    await in_thread(store.ensure_jobs, [spec], now_ms, {spec.name: tick - 1})
    return tick
