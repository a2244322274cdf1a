"""Running one claimed tick: attempts, timeout, retries with backoff, cancellation.

Shared by the daemon's engine and ``candlekeep run`` so a job behaves the same however it
was started. Everything waits on the injected clock, never on the loop's own timers, so
tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from candlekeep.config.models import RetriesConfig
from candlekeep.core.clock import Clock
from candlekeep.jobs.base import JobContext, JobResult, NullProgress, ProgressSink
from candlekeep.jobs.runner import invoke
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.misfire import fmt_duration
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import Finish, SchedulerStore

log = logging.getLogger("candlekeep.scheduler")

RETRYABLE = ("failed", "timed_out")

DB = Callable[..., Awaitable[Any]]
"""Runs a blocking store call (in the engine's database thread, or inline)."""


@dataclass(slots=True)
class Attempt:
    status: str  # success | failed | timed_out | cancelled
    result: JobResult | None
    error: str | None


def backoff_delay(retries: RetriesConfig, attempt: int, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, jittered upwards by up to 25%,
    never below the configured backoff step and never above ``max_backoff``."""
    base = min(retries.max_backoff, retries.backoff * float(2 ** max(0, attempt - 1)))
    return float(min(retries.max_backoff, base * rng.uniform(1.0, 1.25)))


async def _wait_first(*aws: Awaitable[Any]) -> None:
    futs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futs:
            if not f.done():
                f.cancel()


async def execute_attempt(runtime: Runtime, spec: JobSpec, cancel: asyncio.Event,
                          *, dry_run: bool = False,
                          progress: ProgressSink | None = None) -> Attempt:
    """One attempt of ``spec``: its job type's coroutine under the timeout.

    A timeout or a cancellation of the caller first sets ``cancel`` (cooperative: the job
    can save a checkpoint), then cancels the coroutine; durable work done so far stays.
    """
    jlog = logging.getLogger(f"candlekeep.jobs.{spec.name}")
    ctx = JobContext(runtime=runtime, job_name=spec.name, log=jlog, dry_run=dry_run,
                     cancel=cancel, progress=progress or NullProgress())
    if spec.timeout_s is None:
        return await _without_timeout(spec, ctx, jlog)
    job = asyncio.ensure_future(invoke(spec.job_type, ctx, spec.params))
    timer = asyncio.ensure_future(runtime.clock.sleep(spec.timeout_s))
    try:
        await asyncio.wait([job, timer], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel_job(job, cancel, timer)
        return Attempt("cancelled", None, "cancelled: the daemon was stopped")
    if not job.done():
        await _cancel_job(job, cancel, timer)
        return Attempt("timed_out", None,
                       f"timed out after {fmt_duration(int(spec.timeout_s * 1000))}")
    timer.cancel()
    if job.cancelled():
        return Attempt("cancelled", None, "cancelled")
    exc = job.exception()
    if exc is not None:
        jlog.error("job raised job=%s error=%r", spec.name, exc, exc_info=exc)
        return Attempt("failed", None, f"{type(exc).__name__}: {exc}")
    return _judge(ctx, job.result())


async def _without_timeout(spec: JobSpec, ctx: JobContext,
                           jlog: logging.Logger) -> Attempt:
    """The common case, in the caller's own task: no second task, no waiting set."""
    try:
        result = await invoke(spec.job_type, ctx, spec.params)
    except asyncio.CancelledError:
        ctx.cancel.set()
        return Attempt("cancelled", None, "cancelled: the daemon was stopped")
    except Exception as exc:
        jlog.error("job raised job=%s error=%r", spec.name, exc, exc_info=exc)
        return Attempt("failed", None, f"{type(exc).__name__}: {exc}")
    return _judge(ctx, result)


def _judge(ctx: JobContext, result: JobResult) -> Attempt:
    if ctx.cancel.is_set() and not result.ok:
        return Attempt("cancelled", result, "; ".join(result.errors))
    if not result.ok:
        return Attempt("failed", result, "; ".join(result.errors))
    return Attempt("success", result, None)


async def _cancel_job(job: asyncio.Future[Any], cancel: asyncio.Event,
                      timer: asyncio.Future[Any]) -> None:
    cancel.set()
    timer.cancel()
    job.cancel()
    # Shielded from a second cancellation: the job's own clean-up (killing a process
    # group, closing a store transaction) must finish before its run is recorded.
    await asyncio.gather(asyncio.shield(asyncio.gather(job, return_exceptions=True)),
                         return_exceptions=True)


@dataclass(slots=True)
class RunState:
    """The live part of a run, as the engine tracks it: which row the attempt has now."""

    job: str
    scheduled_for: int
    run_id: int
    attempt: int
    trigger: str
    cancel: asyncio.Event
    waiting: bool = False


async def run_attempts(
    runtime: Runtime, spec: JobSpec, store: SchedulerStore, db: DB, state: RunState,
    node: str, rng: random.Random, stop: asyncio.Event,
    progress: ProgressSink | None = None,
) -> tuple[Finish | None, Attempt]:
    """Attempts of one tick until success, a final failure or a stop; returns the last
    attempt's Finish (not yet written: the caller batches it), None if someone else
    already closed the run."""
    clock: Clock = runtime.clock
    while True:
        attempt = await execute_attempt(runtime, spec, state.cancel, progress=progress)
        res = attempt.result
        fin = Finish(state.run_id, attempt.status, clock.now_ms(),
                     res.rows_written if res else 0, res.requests if res else 0,
                     attempt.error)
        _log_attempt(spec, state, attempt, fin)
        if (attempt.status not in RETRYABLE or state.attempt >= spec.retries.attempts
                or stop.is_set()):
            return fin, attempt
        delay = backoff_delay(spec.retries, state.attempt, rng)
        new_id = await db(store.retry, fin, spec.name, state.scheduled_for, state.attempt + 1,
                          node, state.trigger, clock.now_ms())
        if new_id is None:
            log.warning("retry already taken job=%s tick=%s attempt=%s", spec.name,
                        state.scheduled_for, state.attempt + 1)
            return fin, attempt  # rewriting the same values is harmless
        state.run_id, state.attempt, state.waiting = new_id, state.attempt + 1, True
        log.info("retrying job=%s attempt=%s in=%.1fs", spec.name, state.attempt, delay)
        await _wait_first(clock.sleep(delay), stop.wait())
        if stop.is_set():
            return (Finish(new_id, "cancelled", clock.now_ms(),
                           error="cancelled during retry backoff: the daemon was stopped"),
                    Attempt("cancelled", None, None))
        if not await db(store.start_waiting, new_id, clock.now_ms()):
            log.warning("retry abandoned while waiting job=%s attempt=%s", spec.name,
                        state.attempt)
            return None, Attempt("abandoned", None, "abandoned during retry backoff")
        state.waiting = False


def _log_attempt(spec: JobSpec, state: RunState, attempt: Attempt, fin: Finish) -> None:
    level = logging.INFO if attempt.status == "success" else logging.WARNING
    log.log(level, "run finished job=%s tick=%s attempt=%s status=%s rows=%s error=%s",
            spec.name, state.scheduled_for, state.attempt, attempt.status, fin.rows_written,
            attempt.error)
