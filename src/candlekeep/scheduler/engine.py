"""The engine loop: sleep until the next tick, claim what is due, run it, keep leases.

One heap holds each scheduled job's next fire time. The loop sleeps on the injected clock
until the heap's top or the next housekeeping beat, whichever is first, or until a run
finishes (so a blocked job or a batch of finishes is handled at once). Idle, it wakes once
per heartbeat interval and does one small transaction.

Every due job of one instant is claimed in one transaction (see store.py), which is what
lets a thousand per-second jobs dispatch within tens of milliseconds. Finished runs are written in
batches too. State DB failures never end the loop: the step is logged and retried with
backoff, due jobs stay due, finished runs stay queued.
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
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.runner import RunState, run_attempts
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import (
    LEASE_FACTOR,
    ClaimedRun,
    ClaimOutcome,
    Finish,
    SchedulerStore,
)

log = logging.getLogger("candlekeep.scheduler")

T = TypeVar("T")


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
    freeze_gc: bool = False
    """After start-up, move every object so far out of the cyclic GC's reach
    (``gc.freeze``): full collections then scan only what the loop allocated since, which
    keeps their pauses (tens of ms over a daemon's imports) out of dispatch lag."""
    record_lag: bool = False
    """Keep each run's dispatch lag (start - scheduled, ms) in ``Engine.lags`` (benchmarks)."""


@dataclass(slots=True)
class _Handle:
    state: RunState
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class EngineStats:
    claimed: int = 0
    skipped: int = 0
    finished: int = 0
    db_errors: int = 0
    abandoned_swept: int = 0
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
        self._own_store = store is None
        self.store = store or SchedulerStore(
            runtime.state, lease_ms=self.heartbeat_ms * LEASE_FACTOR,
            max_skip_rows=self.options.max_skip_rows, pooled=True)
        self.specs = {s.name: s for s in specs}
        self._disabled = [s.name for s in specs if not s.enabled and s.trigger is not None]
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
        self._runs: dict[int, _Handle] = {}  # by id of the claimed (first) row
        self._finishes: list[Finish] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stop_timeout_s = self.options.stop_timeout_s
        self._db_failures = 0
        self._claim_retry_at: int | None = None
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="candlekeep-db")
                      if self.options.db_in_thread else None)

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

    def running_jobs(self) -> list[RunState]:
        return [h.state for h in self._runs.values()]

    def next_fire(self, job: str) -> int | None:
        return self._next.get(job)

    async def run(self) -> None:
        """Until ``request_stop``; then drain and return."""
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

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool,
                                                                 partial(fn, *args))

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
        scheduled = [s for s in self.specs.values() if s.trigger is not None]
        while not self._stop.is_set():
            now = self.clock.now_ms()
            try:
                if self.options.register_node:
                    n = await self._db(self.store.abandon_node_runs, self.node, now,
                                       f"abandoned: node {self.node} restarted while this "
                                       "ran")
                    if n:
                        log.warning("marked runs abandoned left by a previous process "
                                    "node=%s count=%s", self.node, n)
                    await self._db(self.store.register_node, self.node, os.getpid(), now,
                                   __version__)
                last = await self._db(self.store.ensure_jobs, scheduled, now, self.node)
                break
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
        for spec in scheduled:
            if spec.enabled and spec.trigger is not None:
                self._schedule(spec.name, spec.trigger.next_after(last.get(spec.name, now)))
        log.info("scheduler started node=%s jobs=%s", self.node, len(self._next))

    # -- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_house = self.clock.now_ms()
        while not self._stop.is_set():
            now = self.clock.now_ms()
            if now >= next_house:
                await self._housekeeping(now)
                next_house = now + self.heartbeat_ms
                self._recheck |= self._blocked
            while self._heap and self._heap[0][0] <= now:
                fire, _, job = heapq.heappop(self._heap)
                if self._next.get(job) == fire:
                    self._recheck.add(job)
            if self._recheck and (self._claim_retry_at is None or now >= self._claim_retry_at):
                due = sorted(self._recheck)
                self._recheck.clear()
                await self._claim(due, now)
            await self._flush()
            deadline = next_house
            if self._heap:
                deadline = min(deadline, self._heap[0][0])
            if self._recheck and self._claim_retry_at is not None:
                deadline = min(deadline, self._claim_retry_at)
            await self._sleep_until(deadline)

    async def _claim(self, jobs: list[str], now: int) -> None:
        """Claim in chunks, launching each chunk's runs before claiming the next, so the
        first jobs start while the database is still busy with the rest."""
        size = self.options.claim_chunk
        for i in range(0, len(jobs), size):
            chunk = jobs[i:i + size]
            try:
                outcomes: list[ClaimOutcome] = await self._db(
                    self.store.claim, [self.specs[j] for j in chunk], now, self.node)
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
            for o in outcomes:
                self._apply(o, now)

    def _apply(self, o: ClaimOutcome, now: int) -> None:
        spec = self.specs[o.job]
        assert spec.trigger is not None
        if o.pending:
            self._blocked.add(o.job)
        else:
            self._blocked.discard(o.job)
        self._schedule(o.job, spec.trigger.next_after(max(o.last_tick, now)))
        if o.skipped:
            self.stats.skipped += o.skipped
            log.warning("ticks skipped job=%s count=%s policy=%s", o.job, o.skipped,
                        spec.misfire)
        for run in o.runs:
            self._launch(spec, run)

    def _launch(self, spec: JobSpec, run: ClaimedRun) -> None:
        self.stats.claimed += 1
        if self.options.record_lag:
            self.lags.append(self.clock.now_ms() - run.scheduled_for)
        state = RunState(spec.name, run.scheduled_for, run.run_id, run.attempt, "schedule",
                         asyncio.Event())
        handle = _Handle(state)
        self._runs[run.run_id] = handle
        log.debug("run started job=%s tick=%s run_id=%s", spec.name, run.scheduled_for,
                  run.run_id)
        handle.task = asyncio.ensure_future(self._execute(spec, run.run_id, handle))

    async def _execute(self, spec: JobSpec, key: int, handle: _Handle) -> None:
        state = handle.state
        fin: Finish | None
        try:
            fin, _attempt = await run_attempts(self.runtime, spec, self.store, self._db,
                                               state, self.node, self.rng, self._stop)
        except asyncio.CancelledError:
            fin = Finish(state.run_id, "cancelled", self.clock.now_ms(),
                         error="cancelled: the daemon was stopped")
        except Exception as exc:  # a bug, or a state DB failure between attempts
            log.exception("run failed outside the job job=%s", spec.name)
            fin = Finish(state.run_id, "failed", self.clock.now_ms(),
                         error=f"scheduler error: {exc!r}")
        finally:
            self._runs.pop(key, None)
            if spec.name in self._blocked:
                self._recheck.add(spec.name)
            self._wake.set()
        if fin is not None:
            self._finishes.append(fin)
            self.stats.finished += 1
            self.stats.statuses[fin.status] = self.stats.statuses.get(fin.status, 0) + 1

    async def _flush(self) -> None:
        if not self._finishes:
            return
        batch, self._finishes = self._finishes, []
        try:
            await self._db(self.store.finish_many, batch)
        except Exception as exc:
            self._finishes = batch + self._finishes
            self._db_backoff_ms()
            log.error("recording finished runs failed count=%s error=%r (kept, will retry)",
                      len(batch), exc)

    async def _housekeeping(self, now: int) -> None:
        ids = [h.state.run_id for h in self._runs.values()]
        try:
            swept = await self._db(self.store.housekeep, ids,
                                   self.node if self.options.register_node else None, now,
                                   self._disabled)
        except Exception as exc:
            self._db_backoff_ms()
            log.error("housekeeping failed error=%r (will retry)", exc)
            return
        for run_id, job, node in swept:
            log.warning("run abandoned (lease expired) job=%s run_id=%s node=%s", job,
                        run_id, node)
        self.stats.abandoned_swept += len(swept)

    # -- stopping ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running jobs finish within the stop timeout, cancel the rest, record all."""
        self._stop.set()
        if self._runs:
            log.info("stopping: waiting for running jobs count=%s timeout=%.0fs",
                     len(self._runs), self._stop_timeout_s)
        start = self.clock.now_ms()
        deadline = start + int(self._stop_timeout_s * 1000)
        next_house = start + self.heartbeat_ms
        while self._runs:
            now = self.clock.now_ms()
            deadline = min(deadline, start + int(self._stop_timeout_s * 1000))
            if now >= deadline:
                break
            if now >= next_house:
                await self._housekeeping(now)
                next_house = now + self.heartbeat_ms
            await self._flush()
            await self._sleep_until(min(deadline, next_house))
        tasks = [h.task for h in self._runs.values() if h.task is not None]
        if tasks:
            log.warning("stop timeout reached: cancelling running jobs count=%s", len(tasks))
            for h in self._runs.values():
                h.state.cancel.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in range(5):
            await self._flush()
            if not self._finishes:
                break
            await self.clock.sleep(min(2.0, 0.2 * 2 ** attempt))
        if self._finishes:
            log.error("could not record finished runs count=%s; their lease will mark them "
                      "abandoned", len(self._finishes))
        if self.options.register_node:
            try:
                await self._db(self.store.node_stopped, self.node, self.clock.now_ms())
            except Exception as exc:
                log.error("could not mark node stopped error=%r", exc)
        log.info("scheduler stopped node=%s", self.node)
