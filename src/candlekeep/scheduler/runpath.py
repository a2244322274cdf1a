"""The one run path: however a job starts (a daemon's tick, ``candlekeep run``, a data
command, a system timer, later the HTTP API), it runs here.

A ``RunHost`` lives once per process. It holds the runs this process owns in the state DB
and keeps their leases alive with one heartbeat transaction for all of them. A run goes:
its slot in the cluster (a claimed tick, or ``start_manual``), then this process's own
concurrency slot, then the attempt under its timeout (both timed from when the slot is
held), then a guarded record of how it ended, or a retry that the cluster owns.

Self-fencing. A heartbeat that no longer finds one of our runs among the rows it refreshed
means the cluster took it from us (our lease expired while we stalled): that run is
cancelled at once. A host that has not had a successful heartbeat for the lease minus one
heartbeat cancels all its runs, since the cluster may be about to give them to another
node. Nothing a lost run does afterwards is written over history.

Everything waits on the injected clock, never on the loop's own timers, so tests move
time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from candlekeep.core.errors import CandlekeepError
from candlekeep.core.timeutil import fmt_duration
from candlekeep.jobs.base import JobContext, JobResult, NullProgress, ProgressSink
from candlekeep.jobs.runner import invoke
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.localproc import instance_dead
from candlekeep.scheduler.records import Busy, ClaimedRun, Conflict, Finish, TickTaken
from candlekeep.scheduler.spec import JobSpec, backoff_delay
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.state.statuses import RunStatus, Trigger

log = logging.getLogger("candlekeep.scheduler")

RETRYABLE = (RunStatus.FAILED, RunStatus.TIMED_OUT)

DB = Callable[..., Awaitable[Any]]
"""Runs a blocking store call (in the engine's database thread, or inline in tests)."""

RunObserver = Callable[["RunOutcome", JobSpec], Awaitable[None]]
"""Told how each run ended (alerts, heartbeats); its failure never changes the run."""


def default_observers(runtime: Runtime) -> list[RunObserver]:
    """What every run path tells about each ended run: the alert engine, when the config
    has alert channels, and the run-duration histogram of ``/metrics``, when the config
    has ``api:`` (each imported only then)."""
    observers: list[RunObserver] = []
    if runtime.config.alerts.channels:
        from candlekeep.alerts.engine import AlertEngine

        observers.append(AlertEngine.for_runtime(runtime).after_run)
    if runtime.config.api is not None:
        from candlekeep.api.runmetrics import run_metrics

        observers.append(run_metrics(runtime).observe)
    return observers


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


class JobBusyError(CandlekeepError):
    """The job's slots are all taken (``max_concurrent``) by live runs."""

    def __init__(self, job: str, busy: Busy) -> None:
        super().__init__(f"job {job!r} is running now (node {busy.node}, run {busy.run_id}, "
                         f"{busy.status}); wait for it, or --force to run it anyway")
        self.busy = busy


@dataclass(slots=True)
class Attempt:
    status: RunStatus  # success | failed | timed_out | cancelled
    result: JobResult | None
    error: str | None
    started_at: int | None = None


@dataclass(slots=True)
class RunOutcome:
    """How a run ended, as its caller reports it."""

    job: str
    status: RunStatus
    result: JobResult | None
    error: str | None
    run_id: int | None
    attempts: int
    started_at: int
    finished_at: int
    recorded: bool = True
    """False when the state DB kept another ending (the run was taken from us)."""
    note: str | None = None
    ran_here: bool = True
    """False for a run another process ran and lost (its lease expired, and this node's
    sweep closed it): alerts hear of it, this process's own run metrics do not."""


@dataclass(slots=True)
class LocalRun:
    """A run this process owns: which row its current attempt is, and how to stop it."""

    spec: JobSpec
    scheduled_for: int
    run_id: int
    attempt: int
    trigger: Trigger
    cancel: asyncio.Event
    waiting: bool = False
    stopped: str | None = None
    """Why this process stopped the run on its own (fencing): no retries after that."""
    lost: bool = False
    """The state DB gave the run to someone else: nothing of it is written any more. A
    run only fenced (the DB was out of reach) still tries its guarded record."""


async def _first(*aws: Awaitable[Any]) -> None:
    futs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futs:
            if not f.done():
                f.cancel()


# -- one attempt -------------------------------------------------------------------------


async def execute_attempt(runtime: Runtime, spec: JobSpec, cancel: asyncio.Event, *,
                          dry_run: bool = False, progress: ProgressSink | None = None,
                          process_hook: Callable[[str | None], None] | None = None) -> Attempt:
    """One attempt of ``spec``: wait for this process's concurrency slot, then run the job
    type under the timeout, which (like ``started_at``) starts when the slot is held.

    A timeout or a cancellation first sets ``cancel`` (cooperative: the job can save a
    checkpoint), then cancels the coroutine; durable work done so far stays.
    """
    jlog = _job_logger(spec.name)
    ctx = JobContext(runtime=runtime, job_name=spec.name, log=jlog, dry_run=dry_run,
                     cancel=cancel, progress=progress or _NO_PROGRESS,
                     process_hook=process_hook)
    jt = spec.job_type
    used = jt.sources(ctx, spec.params) if jt.sources else ()
    limits = runtime.limits
    if not limits.limited(used):  # the common case: nothing to queue for
        started = runtime.clock.now_ms()
        attempt = await _timed(spec, ctx, jlog, runtime)
        attempt.started_at = started
        return attempt
    async with contextlib.AsyncExitStack() as stack:
        entering = asyncio.ensure_future(stack.enter_async_context(limits.slot(used)))
        try:
            await _first(entering, cancel.wait())
        except asyncio.CancelledError:
            entering.cancel()
            raise
        if not entering.done() or entering.cancelled() or cancel.is_set():
            return Attempt(RunStatus.CANCELLED, None, "cancelled while queued for a slot")
        started = runtime.clock.now_ms()
        attempt = await _timed(spec, ctx, jlog, runtime)
        attempt.started_at = started
        return attempt


_NO_PROGRESS = NullProgress()


@functools.lru_cache(maxsize=4096)
def _job_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"candlekeep.jobs.{name}")


async def _timed(spec: JobSpec, ctx: JobContext, jlog: logging.Logger,
                 runtime: Runtime) -> Attempt:
    if spec.timeout_s is None:
        # The common case, in the caller's own task: no second task, no waiting set.
        try:
            result = await invoke(spec.job_type, ctx, spec.params)
        except asyncio.CancelledError:
            ctx.cancel.set()
            raise
        except Exception as exc:
            jlog.error("job raised job=%s error=%r", spec.name, exc, exc_info=exc)
            return Attempt(RunStatus.FAILED, None, f"{type(exc).__name__}: {exc}")
        return _judge(ctx, result)
    job = asyncio.ensure_future(invoke(spec.job_type, ctx, spec.params))
    timer = asyncio.ensure_future(runtime.clock.sleep(spec.timeout_s))
    watch = asyncio.ensure_future(ctx.cancel.wait())
    try:
        await asyncio.wait([job, timer, watch], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel_job(job, ctx.cancel, timer, watch)
        raise
    if not job.done():
        await _cancel_job(job, ctx.cancel, timer, watch)
        if timer.done():
            return Attempt(RunStatus.TIMED_OUT, None,
                           f"timed out after {fmt_duration(int(spec.timeout_s * 1000))}")
        return Attempt(RunStatus.CANCELLED, None, "cancelled")
    timer.cancel()
    watch.cancel()
    if job.cancelled():
        return Attempt(RunStatus.CANCELLED, None, "cancelled")
    raised = job.exception()
    if raised is not None:
        jlog.error("job raised job=%s error=%r", spec.name, raised, exc_info=raised)
        return Attempt(RunStatus.FAILED, None, f"{type(raised).__name__}: {raised}")
    return _judge(ctx, job.result())


def _judge(ctx: JobContext, result: JobResult) -> Attempt:
    if ctx.cancel.is_set() and not result.ok:
        return Attempt(RunStatus.CANCELLED, result, "; ".join(result.errors))
    if not result.ok:
        return Attempt(RunStatus.FAILED, result, "; ".join(result.errors))
    return Attempt(RunStatus.SUCCESS, result, None)


async def _cancel_job(job: asyncio.Future[Any], cancel: asyncio.Event,
                      *others: asyncio.Future[Any]) -> None:
    cancel.set()
    for f in others:
        f.cancel()
    job.cancel()
    # Shielded from a second cancellation: the job's own clean-up (ending a process
    # group, closing a store transaction) must finish before its run is recorded.
    await asyncio.gather(asyncio.shield(asyncio.gather(job, return_exceptions=True)),
                         return_exceptions=True)


# -- the host ----------------------------------------------------------------------------


class RunHost:
    """This process's runs: heartbeats, fencing, attempts, retries and their records."""

    def __init__(self, runtime: Runtime, store: SchedulerStore, *, heartbeat_s: float,
                 db: DB = in_thread, rng: random.Random | None = None,
                 node_row: bool = False, autoflush: bool = True,
                 notify: Callable[[], None] | None = None,
                 observers: list[RunObserver] | None = None) -> None:
        """``node_row``: heartbeat a daemon's node row too. ``autoflush``: record each
        finish at once (the CLI); a daemon batches them (``flush``) and is told through
        ``notify`` when there is something to record or a slot came free."""
        self.runtime = runtime
        self.store = store
        self.clock = runtime.clock
        self.db = db
        self.rng = rng or random.Random()
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self.lease_ms = store.lease_ms
        self.node_row = node_row
        self.autoflush = autoflush
        self.notify = notify or (lambda: None)
        self.runs: dict[int, LocalRun] = {}
        self.stopping = asyncio.Event()
        self.fenced = False
        self.skew_ms: int | None = None
        self.conflicts: list[str] | None = None
        self.node_row_ours = True
        self._finishes: list[Finish] = []
        self._closed = asyncio.Event()
        self._beater: asyncio.Task[None] | None = None
        self._last_ok = self.clock.now_ms()
        self._flush_failures = 0
        self.flush_retry_at: int | None = None
        self._process_lock = asyncio.Lock()
        self._process_writes: set[asyncio.Task[None]] = set()
        self.observers = default_observers(runtime) if observers is None else observers
        self._observing: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._last_ok = self.clock.now_ms()
        self._beater = asyncio.ensure_future(self._beat_loop())

    async def close(self) -> None:
        self._closed.set()
        if self._observing:  # alerts of runs that just ended still go out
            await asyncio.gather(*self._observing, return_exceptions=True)
        if self._process_writes:
            await asyncio.gather(*self._process_writes, return_exceptions=True)
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater
            self._beater = None

    async def __aenter__(self) -> RunHost:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- starting runs -------------------------------------------------------------------

    async def start_manual(self, spec: JobSpec, *, trigger: Trigger = Trigger.MANUAL,
                           scheduled_for: int | None = None,
                           force: bool = False) -> ClaimedRun | TickTaken:
        """Take the job's slot for a run outside the daemon's ticks; JobBusyError when
        ``max_concurrent`` live runs hold it (unless ``force``)."""
        got: ClaimedRun | TickTaken | Busy = await self.db(
            self.store.start_manual, spec, self.clock.now_ms(), trigger=trigger,
            scheduled_for=scheduled_for, force=force, dead=instance_dead)
        if isinstance(got, Busy):
            raise JobBusyError(spec.name, got)
        return got

    async def run(self, spec: JobSpec, claimed: ClaimedRun, *,
                  progress: ProgressSink | None = None) -> RunOutcome:
        """Run a claimed tick or manual start to its end: attempts under the timeout,
        retries the cluster owns, a guarded record. The one way any job runs."""
        local = LocalRun(spec, claimed.scheduled_for, claimed.run_id, claimed.attempt,
                         claimed.trigger, asyncio.Event())
        self.runs[local.run_id] = local
        started = self.clock.now_ms()
        try:
            outcome = await self._attempts(local, started, progress)
        except Exception as exc:  # a bug, or the state DB failing between attempts
            log.exception("run failed outside the job job=%s", spec.name)
            attempt = Attempt(RunStatus.FAILED, None, f"scheduler error: {exc!r}")
            if not local.waiting:
                outcome = await self._end(local, attempt, started)
            else:
                with contextlib.suppress(Exception):  # let any node start the retry
                    await self.db(self.store.release_waiting, [local.run_id])
                outcome = self._outcome(local, attempt, started, recorded=False)
        finally:
            self.runs.pop(local.run_id, None)
            self.notify()
        self.observe(outcome, spec)
        return outcome

    def observe(self, outcome: RunOutcome, spec: JobSpec) -> None:
        """Tell the observers in the background: a slow webhook never holds the run's
        slot, and ``close`` waits for what is still on its way."""
        for observer in self.observers:
            async def tell(fn: RunObserver = observer) -> None:
                try:
                    await fn(outcome, spec)
                except Exception:
                    log.exception("run observer failed job=%s", spec.name)

            task = asyncio.ensure_future(tell())
            self._observing.add(task)
            task.add_done_callback(self._observing.discard)

    async def _attempts(self, local: LocalRun, started: int,
                        progress: ProgressSink | None) -> RunOutcome:
        spec = local.spec

        def hook(identity: str | None) -> None:
            self._record_process(local, identity)

        while True:
            try:
                attempt = await execute_attempt(self.runtime, spec, local.cancel,
                                                progress=progress, process_hook=hook)
            except asyncio.CancelledError:
                why = "cancelled (interrupted)" if not self.stopping.is_set() else \
                    "cancelled: the daemon was stopped"
                attempt = Attempt(RunStatus.CANCELLED, None, local.stopped or why)
                await asyncio.shield(self._end(local, attempt, started))
                raise
            if local.stopped is not None and attempt.status is not RunStatus.SUCCESS:
                attempt = replace(attempt, status=RunStatus.CANCELLED,
                                  error=f"{local.stopped}; {attempt.error or ''}".rstrip("; "))
            _log_attempt(local, attempt)
            if (attempt.status not in RETRYABLE or local.attempt >= spec.retries.attempts
                    or self.stopping.is_set() or local.stopped is not None):
                return await self._end(local, attempt, started)
            outcome = await self._retry(local, attempt, started)
            if outcome is not None:
                return outcome

    async def _retry(self, local: LocalRun, attempt: Attempt,
                     started: int) -> RunOutcome | None:
        """Hand the slot to a waiting retry and sit out its backoff; None when the retry
        is ours to run now, else how the run ended here."""
        spec = local.spec
        now = self.clock.now_ms()
        delay = backoff_delay(spec.retries, local.attempt, self.rng)
        not_before = now + int(delay * 1000)
        got = await self.db(self.store.retry, self._finish(local, attempt), local.scheduled_for,
                            spec.name, local.attempt + 1, local.trigger, not_before)
        if isinstance(got, Conflict):
            self._log_conflict(spec.name, got)
            return self._outcome(local, attempt, started, recorded=False)
        self._rekey(local, got)
        local.attempt += 1
        local.waiting = True
        local.cancel = asyncio.Event()  # the failed attempt's timeout may have set the old one
        log.info("retrying job=%s attempt=%s in=%.1fs", spec.name, local.attempt, delay)
        try:
            await _first(self.clock.sleep(delay), self.stopping.wait(), local.cancel.wait())
        except asyncio.CancelledError:
            await asyncio.shield(self.db(self.store.cancel_waiting, local.run_id,
                                         self.clock.now_ms(), "cancelled during retry "
                                         "backoff (interrupted)"))
            raise
        if local.lost:
            return self._outcome(local, attempt, started, recorded=False, note=local.stopped)
        if self.stopping.is_set() or local.cancel.is_set():
            await self.db(self.store.release_waiting, [local.run_id])
            note = (f"attempt {local.attempt} waits until {not_before} for any node "
                    "to start it")
            log.info("retry handed to the cluster job=%s attempt=%s", spec.name,
                     local.attempt)
            return self._outcome(local, Attempt(RunStatus.WAITING, attempt.result,
                                                attempt.error), started, note=note)
        if not await self.db(self.store.start_waiting, local.run_id, self.clock.now_ms()):
            note = "the retry was started or closed elsewhere"
            log.warning("retry taken elsewhere job=%s attempt=%s", spec.name, local.attempt)
            return self._outcome(local, attempt, started, recorded=False, note=note)
        local.waiting = False
        return None

    def _rekey(self, local: LocalRun, run_id: int) -> None:
        self.runs.pop(local.run_id, None)
        local.run_id = run_id
        self.runs[run_id] = local

    def _finish(self, local: LocalRun, attempt: Attempt) -> Finish:
        res = attempt.result
        return Finish(local.run_id, attempt.status, self.clock.now_ms(),
                      res.rows_written if res else 0, res.requests if res else 0,
                      attempt.error, attempt.started_at)

    def _outcome(self, local: LocalRun, attempt: Attempt, started: int, *,
                 recorded: bool = True, note: str | None = None) -> RunOutcome:
        return RunOutcome(local.spec.name, attempt.status, attempt.result, attempt.error,
                          local.run_id, local.attempt, started, self.clock.now_ms(),
                          recorded, note)

    async def _end(self, local: LocalRun, attempt: Attempt, started: int) -> RunOutcome:
        fin = self._finish(local, attempt)
        if local.lost:
            log.warning("run lost job=%s run_id=%s status=%s why=%s (not recorded)",
                        local.spec.name, local.run_id, attempt.status, local.stopped)
            return self._outcome(local, attempt, started, recorded=False, note=local.stopped)
        self._finishes.append(fin)
        self.notify()
        if not self.autoflush:
            return self._outcome(local, attempt, started)
        conflicts = await self.flush()
        recorded = fin.run_id not in {c.run_id for c in conflicts}
        if any(f.run_id == fin.run_id for f in self._finishes):
            recorded = False  # the state DB is unreachable; the lease will close the run
        return self._outcome(local, attempt, started, recorded=recorded)

    def _record_process(self, local: LocalRun, identity: str | None) -> None:
        """A command run's process group, recorded so a restarted node can end leftovers.
        Writes go out in the order they were reported (one lock, first come first served)."""
        run_id = local.run_id

        async def write() -> None:
            async with self._process_lock:
                try:
                    await self.db(self.store.set_process, run_id, identity)
                except Exception as exc:
                    log.warning("could not record the run's process group job=%s error=%r",
                                local.spec.name, exc)

        task = asyncio.ensure_future(write())
        self._process_writes.add(task)
        task.add_done_callback(self._process_writes.discard)

    # -- recording -----------------------------------------------------------------------

    @property
    def pending_finishes(self) -> int:
        return len(self._finishes)

    async def flush(self) -> list[Conflict]:
        """Record queued finishes in one transaction; conflicts are logged, never forced.

        A batch the database rejects for its content is retried row by row: the row at
        fault is parked with a plain error instead of its result, and the others land. A
        batch that fails for the connection stays queued for the next flush.
        """
        if not self._finishes:
            return []
        batch, self._finishes = self._finishes, []
        try:
            conflicts: list[Conflict] = await self.db(self.store.finish_many, batch)
        except Exception as exc:
            if _transient(exc):
                self._requeue(batch, exc)
                return []
            conflicts = await self._row_by_row(batch, exc)
        self._flush_failures = 0
        self.flush_retry_at = None
        for c in conflicts:
            self._log_conflict(None, c)
        return conflicts

    async def _row_by_row(self, batch: list[Finish], exc: Exception) -> list[Conflict]:
        log.error("recording finished runs failed count=%s error=%r; recording one by one",
                  len(batch), exc)
        conflicts: list[Conflict] = []
        for i, fin in enumerate(batch):
            try:
                conflicts += await self.db(self.store.finish_many, [fin])
                continue
            except Exception as row_exc:
                if _transient(row_exc):
                    self._requeue(batch[i:], row_exc)
                    return conflicts
                parked = Finish(fin.run_id, fin.status, fin.finished_at, error=(
                    f"the run ended {fin.status} but its result could not be recorded "
                    f"({type(row_exc).__name__})"), started_at=fin.started_at)
                log.error("parking an unrecordable run result run_id=%s error=%r",
                          fin.run_id, row_exc)
            try:
                conflicts += await self.db(self.store.finish_many, [parked])
            except Exception as park_exc:
                log.error("dropping an unrecordable run result run_id=%s error=%r (its "
                          "lease will mark it abandoned)", fin.run_id, park_exc)
        return conflicts

    def _requeue(self, batch: list[Finish], exc: Exception) -> None:
        self._finishes = batch + self._finishes
        self._flush_failures += 1
        wait = int(min(30.0, 0.5 * 2 ** min(self._flush_failures, 10)) * 1000)
        self.flush_retry_at = self.clock.now_ms() + wait
        log.error("recording finished runs failed count=%s error=%r (kept, retry in %.1fs)",
                  len(batch), exc, wait / 1000)

    def _log_conflict(self, job: str | None, c: Conflict) -> None:
        log.warning("run no longer ours, not recorded job=%s run_id=%s wanted=%s "
                    "state_db_says=%s node=%s", job or "-", c.run_id, c.wanted, c.found,
                    c.node)

    # -- heartbeats and fencing ----------------------------------------------------------

    @property
    def fence_at(self) -> int:
        """Without a successful heartbeat by then, our runs may be given away: stop them."""
        return self._last_ok + self.lease_ms - self.heartbeat_ms

    async def _beat_loop(self) -> None:
        next_beat = self.clock.now_ms() + self.heartbeat_ms
        while not self._closed.is_set():
            now = self.clock.now_ms()
            self._check_fence(now)
            if now >= next_beat:
                ok = await self._beat_watched()
                next_beat = self.clock.now_ms() + (self.heartbeat_ms if ok
                                                   else min(self.heartbeat_ms, 1000))
                continue
            until = next_beat if self.fenced or not self.runs else min(next_beat,
                                                                       self.fence_at)
            await _first(self.clock.sleep(max(0.001, (until - now) / 1000)),
                         self._closed.wait())

    async def _beat_watched(self) -> bool:
        """``beat``, fencing meanwhile if the call outlasts the fence deadline (a state DB
        that hangs rather than refuses)."""
        task = asyncio.ensure_future(self.beat())
        try:
            while not task.done():
                now = self.clock.now_ms()
                self._check_fence(now)
                wait = self.fence_at - now if self.runs and not self.fenced \
                    else self.heartbeat_ms
                await _first(asyncio.shield(task), self.clock.sleep(max(0.001, wait / 1000)))
            return task.result()
        finally:
            task.cancel()

    def _check_fence(self, now: int) -> None:
        if not self.fenced and self.runs and now >= self.fence_at:
            self.fence(f"fenced: no heartbeat reached the state DB for "
                       f"{fmt_duration(now - self._last_ok)} (lease {fmt_duration(self.lease_ms)})")

    async def beat(self) -> bool:
        """One heartbeat: extend our leases, stop runs we no longer hold, measure skew."""
        before = {rid for rid, r in self.runs.items() if not r.lost}
        ids = sorted(before | {f.run_id for f in self._finishes})  # unrecorded ends too
        sent = self.clock.now_ms()
        try:
            beat = await self.db(self.store.heartbeat, ids, sent, node_row=self.node_row,
                                 skew_ms=self.skew_ms, conflicts=self.conflicts)
        except Exception as exc:
            log.error("heartbeat failed error=%r (runs are fenced %s after the last good one)",
                      exc, fmt_duration(self.lease_ms - self.heartbeat_ms))
            return False
        received = self.clock.now_ms()
        self._last_ok = sent
        if self.fenced:
            log.warning("heartbeats reach the state DB again")
        self.fenced = False
        if self.node_row_ours and not beat.node_row_ours:
            log.error("node %s: the node row now names another process: a second daemon runs "
                      "under this node name (give each daemon its own 'node:')",
                      self.store.owner.node if self.store.owner else "?")
        self.node_row_ours = beat.node_row_ours
        if beat.db_now_ms is not None:
            self.skew_ms = beat.db_now_ms - (sent + received) // 2
        for run_id in before - beat.held:
            run = self.runs.get(run_id)
            if run is not None and not run.lost:
                self._stop(run, "lost: the state DB no longer gives this run to us (our "
                                "lease expired; it was abandoned or taken over)", lost=True)
        return True

    def fence(self, why: str) -> None:
        """Stop every local run: we cannot prove we still hold them."""
        self.fenced = True
        if self.runs:
            log.error("%s: cancelling local runs count=%s", why, len(self.runs))
        for run in list(self.runs.values()):
            self._stop(run, why, lost=False)

    def _stop(self, run: LocalRun, why: str, *, lost: bool) -> None:
        run.stopped = run.stopped or why
        run.lost = run.lost or lost
        log.warning("%s job=%s run_id=%s", why, run.spec.name, run.run_id)
        run.cancel.set()

    def cancel_all(self) -> None:
        """Stop every run now (the daemon's stop timeout has passed)."""
        for run in self.runs.values():
            run.cancel.set()


def _transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed unchanged later (the connection, not the data)."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | OSError)


def _log_attempt(local: LocalRun, attempt: Attempt) -> None:
    level = logging.INFO if attempt.status is RunStatus.SUCCESS else logging.WARNING
    res = attempt.result
    log.log(level, "run finished job=%s tick=%s attempt=%s status=%s rows=%s error=%s",
            local.spec.name, local.scheduled_for, local.attempt, attempt.status,
            res.rows_written if res else 0, attempt.error)
