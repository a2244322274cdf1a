"""The engine loop: sleep until the next tick, record what finished, claim what is due,
run it through the run path, and keep the cluster tidy.

One heap holds each scheduled job's next fire time. The loop sleeps on the injected clock
until the heap's top, the next housekeeping beat or a run's end, whichever is first.
Finished runs are recorded before anything is claimed, so a slot freed a moment ago is
free. Every due job of one instant is claimed in one transaction (see store.py), which is
what lets a thousand per-second jobs dispatch within milliseconds. Runs themselves belong
to the process's ``RunHost`` (runpath.py): heartbeats, fencing, timeouts, retries.

Housekeeping (each heartbeat interval) sweeps runs whose owner's lease expired, starts due
retries nobody else started, records the ticks of disabled jobs as skipped, and applies
the retention policy once a day. State DB failures never end the loop: the step is logged
and retried with backoff, due jobs stay due, finished runs stay queued.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import logging
import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from candlekeep import __version__
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.timeutil import fmt_duration
from candlekeep.jobs.procgroup import end_recorded_group
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.localproc import is_candlekeep, pid_alive
from candlekeep.scheduler.records import (
    ClaimedRun,
    ClaimOutcome,
    ClaimState,
    Owner,
)
from candlekeep.scheduler.retention import Retention, prune
from candlekeep.scheduler.runpath import RunHost, RunOutcome
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import LEASE_FACTOR, SchedulerStore
from candlekeep.state.rows import NodeRow
from candlekeep.state.statuses import RunStatus

log = logging.getLogger("candlekeep.scheduler")

T = TypeVar("T")
DAY_MS = 86_400_000
LOCKED_RETRY_MS = 250
"""A job whose row another process holds is looked at again this much later."""
SETTLE_MS = 50
"""Finished runs are recorded this long after the last launch, unless a claim needs it
sooner."""


class ClockSkewError(CandlekeepError):
    """This node's clock and the state DB's disagree by more than the lease allows."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    heartbeat_s: float = 5.0
    """How often running runs and this node are heartbeated; the lease is 3 times this."""
    stop_timeout_s: float = 60.0
    """On stop, how long running jobs get to finish before they are cancelled."""
    db_in_thread: bool = True
    """Run state-DB calls in a worker thread (the daemon) or inline (deterministic tests)."""
    max_skip_rows: int = 1000
    claim_chunk: int = 1000
    """Jobs per claim transaction; a batch's runs start while the next batch is claimed."""
    db_retry_max_s: float = 30.0
    register_node: bool = True
    db_clock: bool | None = None
    """Judge leases by the state DB's clock (PostgreSQL's default); off for fake clocks."""
    max_skew_s: float | None = None
    """Refuse to start (and pause claiming) beyond this clock skew; default lease / 3."""
    retention: Retention | None = None
    """Pruned once a day by the daemon; None keeps everything."""
    claim_ahead_s: float | None = None
    """Claim a tick's runs this long before it is due, and start them at the tick, so the
    claim transaction is not on the critical path. None: three times the longest recent
    claim, between 0.25 and 1 s."""
    freeze_gc: bool = False
    """After start-up, move every object so far out of the cyclic GC's reach
    (``gc.freeze``), and run full collections at quiet moments (at housekeeping, when no
    tick is near) instead of whenever the allocator decides: a full collection still
    pauses the loop for tens of ms, which landing on a tick would add to its lag."""
    record_lag: bool = False
    """Keep each run's dispatch lag (start - scheduled, ms) in ``Engine.lags`` (benchmarks)."""


@dataclass(slots=True)
class EngineStats:
    claimed: int = 0
    skipped: int = 0
    finished: int = 0
    db_errors: int = 0
    abandoned_swept: int = 0
    adopted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(self, runtime: Runtime, specs: Sequence[JobSpec],
                 options: EngineOptions | None = None, *, rng: random.Random | None = None,
                 store: SchedulerStore | None = None) -> None:
        self.runtime = runtime
        self.clock = runtime.clock
        self.node = runtime.node
        self.options = options or EngineOptions()
        self.heartbeat_ms = int(self.options.heartbeat_s * 1000)
        lease_ms = self.heartbeat_ms * LEASE_FACTOR
        self._own_store = store is None
        self.store = store or SchedulerStore(
            runtime.state, Owner(runtime.node, runtime.instance, lease_ms),
            max_skip_rows=self.options.max_skip_rows, pooled=True,
            db_clock=self.options.db_clock, rng=rng)
        self.specs = {s.name: s for s in specs}
        self._scheduled = [s for s in specs if s.trigger is not None]
        self._disabled = [s.name for s in self._scheduled if not s.enabled]
        self.rng = rng or random.Random()
        self.stats = EngineStats()
        self.lags: list[int] = []
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self._heap: list[tuple[int, int, str]] = []
        self._next: dict[str, int] = {}
        self._seq = itertools.count()
        self._blocked: set[str] = set()
        self._recheck: set[str] = set()
        self._conflicts: dict[str, str] = {}  # job -> who set the cluster's spec
        self._tasks: set[asyncio.Task[RunOutcome]] = set()
        self._launches: list[tuple[int, int, JobSpec, ClaimedRun]] = []
        """Runs claimed ahead of their tick, waiting for it (a heap by start time)."""
        self._claim_ms = 0.0  # the longest recent claim (decaying)
        self._gc_threshold: tuple[int, int, int] | None = None
        self._last_launch = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stop_timeout_s = self.options.stop_timeout_s
        self._db_failures = 0
        self._claim_retry_at: int | None = None
        self._waiting_due: int | None = None
        self._next_prune = 0
        self._skew_paused = False
        self.max_skew_ms = int(self.options.max_skew_s * 1000) if \
            self.options.max_skew_s is not None else lease_ms // 3
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="candlekeep-db")
                      if self.options.db_in_thread else None)
        self.host = RunHost(runtime, self.store, heartbeat_s=self.options.heartbeat_s,
                            db=self._db, rng=self.rng, node_row=self.options.register_node,
                            autoflush=False, notify=self._wake.set)

    # -- public --------------------------------------------------------------------------

    def request_stop(self, timeout_s: float | None = None) -> None:
        """Stop claiming; running jobs get ``timeout_s`` to finish, then are cancelled.
        Asking again shortens the wait (a second Ctrl-C cancels at once)."""
        if self._stop.is_set():
            self._stop_timeout_s = 0.0 if timeout_s is None else min(self._stop_timeout_s,
                                                                     timeout_s)
        elif timeout_s is not None:
            self._stop_timeout_s = timeout_s
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def conflicts(self) -> list[str]:
        """Jobs this node does not claim because the cluster's spec differs from ours."""
        return sorted(self._conflicts)

    async def run(self) -> None:
        """Until ``request_stop``; then drain and return. ClockSkewError if this node's
        clock is too far from the state DB's to schedule honestly."""
        try:
            await self._startup()
            self.started.set()
            if not self._stop.is_set():
                await self._loop()
        finally:
            await self._drain()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            if self._own_store:
                self.store.dispose()
            self.stopped.set()

    # -- plumbing ------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            return fn(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, partial(fn, *args, **kwargs))

    def _db_backoff_ms(self) -> int:
        self._db_failures += 1
        self.stats.db_errors += 1
        return int(min(self.options.db_retry_max_s, 0.5 * 2 ** min(self._db_failures, 10))
                   * 1000)

    def _schedule(self, job: str, fire_ms: int) -> None:
        self._next[job] = fire_ms
        heapq.heappush(self._heap, (fire_ms, next(self._seq), job))

    async def _sleep_until(self, deadline_ms: int) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        delay = (deadline_ms - self.clock.now_ms()) / 1000
        if delay <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(max(delay, 0.001)))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([sleeper, waker], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        self._wake.clear()

    # -- startup -------------------------------------------------------------------------

    async def _startup(self) -> None:
        while not self._stop.is_set():
            now = self.clock.now_ms()
            try:
                if self.options.register_node:
                    await self._check_skew()
                    await self._register(now)
                rows = await self._db(self.store.ensure_jobs, self._scheduled, now)
                break
            except ClockSkewError:
                raise
            except Exception as exc:
                wait = self._db_backoff_ms()
                log.error("state DB unavailable at start error=%r retry_in=%.1fs", exc,
                          wait / 1000)
                await self._sleep_until(now + wait)
        else:
            return
        self._db_failures = 0
        if self.options.freeze_gc:
            gc.collect()
            gc.freeze()
            self._gc_threshold = gc.get_threshold()
            young, middle, _ = self._gc_threshold
            gc.set_threshold(young, middle, 1_000_000)  # full collections: _quiet_collect
        for spec in self._scheduled:
            row = rows.get(spec.name)
            if spec.enabled and spec.trigger is not None:
                self._schedule(spec.name, spec.trigger.next_after(
                    row.last_tick if row is not None else now))
        self.host.start()
        log.info("scheduler started node=%s instance=%s jobs=%s", self.node,
                 self.runtime.instance, len(self._next))

    async def _check_skew(self) -> None:
        if not self.store.db_clock:
            return
        sent = self.clock.now_ms()
        db_now = await self._db(self.store.db_now_ms)
        if db_now is None:
            return
        skew = db_now - (sent + self.clock.now_ms()) // 2
        if abs(skew) > self.max_skew_ms:
            raise ClockSkewError(
                f"clock skew: node {self.node}'s clock is {_signed_s(-skew)} off the state "
                f"DB's (limit {fmt_duration(self.max_skew_ms)}, a third of the "
                f"{fmt_duration(self.store.lease_ms)} lease); fix this host's time sync "
                "(NTP/chrony) before starting the scheduler here")
        self.host.skew_ms = skew

    async def _register(self, now: int) -> None:
        old = await self._db(self.store.register_node, os.getpid(), now, __version__)
        if old is None or old.instance in (None, self.runtime.instance):
            return
        if not _known_dead(old, self.store.owner.host if self.store.owner else ""):
            return
        gone = await self._db(self.store.abandon_instance, old.instance, now,
                              f"node {self.node} restarted while this ran")
        if gone:
            log.warning("marked runs abandoned left by a previous process node=%s "
                        "instance=%s count=%s", self.node, old.instance, len(gone))
        leftovers = await self._db(self.store.leftover_processes, old.instance)
        for run_id, identity in leftovers:
            try:
                ended = await end_recorded_group(identity)
            except ValueError:
                continue
            if ended:
                log.warning("ended processes a dead predecessor left running run_id=%s "
                            "count=%s", run_id, ended)

    # -- the loop ------------------------------------------------------------------------

    @property
    def claim_ahead_ms(self) -> int:
        if self.options.claim_ahead_s is not None:
            return int(self.options.claim_ahead_s * 1000)
        return int(min(1000.0, max(250.0, 3 * self._claim_ms)))

    async def _loop(self) -> None:
        next_house = self.clock.now_ms()
        while not self._stop.is_set():
            now = self.clock.now_ms()
            self._launch_due(now)
            if now >= next_house:
                await self._housekeeping(now)
                next_house = now + self.heartbeat_ms
                self._recheck |= self._blocked
                self._recheck.update(self._disabled)
            ahead = self.claim_ahead_ms
            by_tick: dict[int, list[str]] = {}
            while self._heap and self._heap[0][0] - ahead <= now:
                fire, _, job = heapq.heappop(self._heap)
                if self._next.get(job) == fire:
                    by_tick.setdefault(max(fire, now), []).append(job)
            # Before claiming: a slot freed a moment ago is free. With nothing to claim, wait
            # until a burst of launches has settled: writing a batch competes with starting
            # the rest of the tick's runs.
            if by_tick or self._recheck or now - self._last_launch >= SETTLE_MS:
                await self._flush(now)
            if self._waiting_due is not None and now >= self._waiting_due:
                await self._adopt(now)
            if (self._recheck or by_tick) and self._may_claim(now):
                if self._recheck:
                    by_tick.setdefault(now, []).extend(self._recheck)
                    self._recheck.clear()
                for tick in sorted(by_tick):
                    await self._claim(sorted(set(by_tick[tick])), tick)
            else:
                for jobs in by_tick.values():
                    self._recheck.update(jobs)
            self._launch_due(self.clock.now_ms())
            deadline = next_house
            if self._heap:
                deadline = min(deadline, self._heap[0][0] - self.claim_ahead_ms)
            if self._launches:
                deadline = min(deadline, self._launches[0][0])
            if self._recheck and self._claim_retry_at is not None:
                deadline = min(deadline, self._claim_retry_at)
            if self._waiting_due is not None:
                deadline = min(deadline, self._waiting_due)
            if self.host.pending_finishes:
                flush_at = max(self._last_launch + SETTLE_MS, self.host.flush_retry_at or 0)
                if flush_at > now:
                    deadline = min(deadline, flush_at)
            await self._sleep_until(deadline)

    def _launch_due(self, now: int) -> None:
        while self._launches and self._launches[0][0] <= now:
            _, _, spec, run = heapq.heappop(self._launches)
            self._launch(spec, run)

    def _may_claim(self, now: int) -> bool:
        if self._claim_retry_at is not None and now < self._claim_retry_at:
            return False
        if self.host.fenced:
            return False
        skew = self.host.skew_ms
        too_far = skew is not None and self.store.db_clock and abs(skew) > self.max_skew_ms
        if too_far != self._skew_paused:
            self._skew_paused = too_far
            if too_far:
                log.error("clock skew: this node's clock is %s off the state DB's (limit %s); "
                          "not claiming until it is fixed", _signed_s(-(skew or 0)),
                          fmt_duration(self.max_skew_ms))
            else:
                log.warning("clock skew back within limits; claiming again")
        return not too_far

    async def _claim(self, jobs: list[str], now: int) -> None:
        """Claim ``jobs`` as of ``now`` (a tick a moment away, or the present), in chunks,
        launching each chunk's runs before claiming the next."""
        size = self.options.claim_chunk
        for i in range(0, len(jobs), size):
            chunk = jobs[i:i + size]
            began = self.clock.now_ms()
            try:
                outcomes: list[ClaimOutcome] = await self._db(
                    self.store.claim, [self.specs[j] for j in chunk], now, clock_ms=began)
            except Exception as exc:
                wait = self._db_backoff_ms()
                rest = jobs[i:]
                log.error("claim failed jobs=%s error=%r retry_in=%.1fs", len(rest), exc,
                          wait / 1000)
                self._recheck.update(rest)  # still due: last_tick did not move
                self._claim_retry_at = now + wait
                return
            self._db_failures = 0
            self._claim_retry_at = None
            self._claim_ms = max(float(self.clock.now_ms() - began), 0.9 * self._claim_ms)
            for o in outcomes:
                self._apply(o, now)

    def _apply(self, o: ClaimOutcome, now: int) -> None:
        spec = self.specs[o.job]
        assert spec.trigger is not None
        if o.state is ClaimState.LOCKED:
            self._recheck.add(o.job)
            self._claim_retry_at = now + LOCKED_RETRY_MS
            return
        self._note_conflict(o)
        if o.pending:
            self._blocked.add(o.job)
        else:
            self._blocked.discard(o.job)
        if spec.enabled:
            self._schedule(o.job, spec.trigger.next_after(max(o.last_tick or now, now)))
        if o.skipped and spec.enabled:
            self.stats.skipped += o.skipped
            log.warning("ticks skipped job=%s count=%s policy=%s", o.job, o.skipped,
                        spec.misfire)
        for run in o.runs:
            if now > self.clock.now_ms():  # claimed ahead: start at the tick
                heapq.heappush(self._launches, (now, next(self._seq), spec, run))
            else:
                self._launch(spec, run)

    def _note_conflict(self, o: ClaimOutcome) -> None:
        if o.state is ClaimState.CONFLICT and o.conflict is not None:
            if o.job not in self._conflicts:
                log.error("spec differs: job %s is configured differently on this node than "
                          "in the cluster (set by node %s); this node does not claim it "
                          "until their configs agree", o.job, o.conflict.spec_by)
                self._conflicts[o.job] = o.conflict.spec_by or "?"
                self.host.conflicts = self.conflicts
        elif o.job in self._conflicts:
            del self._conflicts[o.job]
            log.warning("spec agrees again: job %s is claimed by this node again", o.job)
            self.host.conflicts = self.conflicts

    def _launch(self, spec: JobSpec, run: ClaimedRun) -> None:
        self.stats.claimed += 1
        self._last_launch = self.clock.now_ms()
        if self.options.record_lag:
            self.lags.append(self.clock.now_ms() - run.scheduled_for)
        task = asyncio.ensure_future(self.host.run(spec, run))
        self._tasks.add(task)
        task.add_done_callback(partial(self._ended, spec.name))

    def _ended(self, job: str, task: asyncio.Task[RunOutcome]) -> None:
        self._tasks.discard(task)
        if job in self._blocked:
            self._recheck.add(job)
        if task.cancelled():
            return
        out = task.result()
        self.stats.finished += 1
        self.stats.statuses[out.status] = self.stats.statuses.get(out.status, 0) + 1

    async def _flush(self, now: int) -> None:
        retry_at = self.host.flush_retry_at
        if self.host.pending_finishes and (retry_at is None or now >= retry_at):
            await self.host.flush()

    async def _adopt(self, now: int) -> None:
        """Start due retries whose creator is gone (killed, or stopped during backoff)."""
        mine = [j for j, s in self.specs.items() if j not in self._conflicts and s.enabled]
        try:
            runs = await self._db(self.store.adopt, mine, now)
            self._waiting_due = await self._db(self.store.next_waiting, mine)
        except Exception as exc:
            self._db_backoff_ms()
            log.error("starting due retries failed error=%r (will retry)", exc)
            return
        for run in runs:
            self.stats.adopted += 1
            log.info("retry started here job=%s tick=%s attempt=%s", run.job,
                     run.scheduled_for, run.attempt)
            self._launch(self.specs[run.job], run)
        if self._waiting_due is not None and self._waiting_due <= now:
            # Due but not ours yet (its creator still holds it): look again next beat.
            self._waiting_due = now + self.heartbeat_ms

    async def _housekeeping(self, now: int) -> None:
        try:
            swept = await self._db(self.store.sweep, now)
        except Exception as exc:
            self._db_backoff_ms()
            log.error("housekeeping failed error=%r (will retry)", exc)
            return
        for a in swept:
            more = f" retry_run_id={a.retry_id}" if a.retry_id else ""
            log.warning("run abandoned (lease expired) job=%s run_id=%s node=%s%s", a.job,
                        a.run_id, a.node, more)
            spec = self.specs.get(a.job)
            if a.retry_id is None and spec is not None:  # its last attempt: tell alerts
                self.host.observe(RunOutcome(
                    a.job, RunStatus.ABANDONED, None,
                    f"abandoned: node {a.node} stopped renewing its lease", a.run_id,
                    a.attempt, now, now, ran_here=False), spec)
        self.stats.abandoned_swept += len(swept)
        await self._adopt(now)
        self._quiet_collect()
        retention = self.options.retention
        if retention is not None and now >= self._next_prune:
            self._next_prune = now + DAY_MS
            try:
                counts = await self._db(prune, self.store, retention, now)
            except Exception as exc:
                log.error("retention failed error=%r (tomorrow again)", exc)
            else:
                if counts.total:
                    log.info("retention pruned %s", counts)

    def _quiet_collect(self) -> None:
        """A full GC collection now, if no claim or launch is due within 200 ms."""
        if not self.options.freeze_gc or self._launches:
            return
        now = self.clock.now_ms()
        if self._heap and self._heap[0][0] - self.claim_ahead_ms - now < 200:
            return
        gc.collect(2)

    # -- stopping ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running jobs finish within the stop timeout, cancel the rest, record all.
        Retries waiting out a backoff are handed to the cluster, not cancelled."""
        self._stop.set()
        while self._launches:  # claimed for a tick a moment away: they run, at that tick
            await self._sleep_until(self._launches[0][0])
            self._launch_due(self.clock.now_ms())
        self.host.stopping.set()
        if self._tasks:
            log.info("stopping: waiting for running jobs count=%s timeout=%.0fs",
                     len(self._tasks), self._stop_timeout_s)
        start = self.clock.now_ms()
        while self._tasks:
            now = self.clock.now_ms()
            deadline = start + int(self._stop_timeout_s * 1000)
            if now >= deadline:
                break
            await self._flush(now)
            await self._sleep_until(min(deadline, now + self.heartbeat_ms))
        tasks = list(self._tasks)
        if tasks:
            log.warning("stop timeout reached: cancelling running jobs count=%s", len(tasks))
            self.host.cancel_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in range(5):
            await self.host.flush()
            if not self.host.pending_finishes:
                break
            await self.clock.sleep(min(2.0, 0.2 * 2 ** attempt))
        if self.host.pending_finishes:
            log.error("could not record finished runs count=%s; their lease will mark them "
                      "abandoned", self.host.pending_finishes)
        await self.host.close()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
        if self.options.register_node and self.started.is_set():
            try:
                await self._db(self.store.node_stopped, self.clock.now_ms())
            except Exception as exc:
                log.error("could not mark node stopped error=%r", exc)
        log.info("scheduler stopped node=%s", self.node)


def _known_dead(old: NodeRow, host: str) -> bool:
    """Whether the process that held our node name before us is certainly gone: on this
    host with its PID gone (or reused by something else), or with its lease long over."""
    if old.status != "running":
        return True
    if old.host == host:
        return old.pid == os.getpid() or not pid_alive(old.pid) or not is_candlekeep(old.pid)
    return False


def _signed_s(ms: int) -> str:
    return f"{'+' if ms >= 0 else '-'}{abs(ms) / 1000:.1f}s"

