"""The scheduler's durable state: jobs and their specs, claims, manual starts, adoption of
retries, and the leases that say which runs are alive.

Synchronous (SQLAlchemy Core); the engine calls it from one worker thread. Every method is
one transaction, so a process killed at any instant leaves the state DB consistent.

Time. Ticks fall due by the caller's clock (``now_ms``), but leases are judged by the
state DB's clock on PostgreSQL (``clock_timestamp()`` inside the statements), so a node
whose clock is off can neither mistake a live run for a dead one nor keep a dead one
alive. SQLite is one host's file: there the caller's clock is the database's.

Liveness. A run is alive while its status is ``running`` and its ``lease_until`` (written by
its owner's heartbeats, as the owner's own lease) lies ahead. That one predicate decides
claims, sweeps and manual starts. A ``waiting`` retry always holds its slot; its owner
starts it when due, and any node may start it once the owner's lease has lapsed.

Writes by owners are guarded: finishing or retrying a run only touches a row that is still
live and still owned by this instance; anything else is reported as a ``Conflict`` and
never written over history.

Claiming locks the due jobs' ``scheduler_jobs`` rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL: a row someone else holds means they are claiming it; ``BEGIN IMMEDIATE`` on
SQLite), reaps expired runs of those jobs, counts live ones, lets the misfire policy
decide, inserts the run rows and moves ``last_tick``. The unique ``(job, scheduled_for,
attempt)`` key stays the last line of defence.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from candlekeep.config.models import RetriesConfig
from candlekeep.core.text import clean_text
from candlekeep.core.timeutil import fmt_ms
from candlekeep.scheduler.misfire import decide
from candlekeep.scheduler.records import (
    Abandoned,
    Beat,
    Busy,
    ClaimedRun,
    ClaimOutcome,
    ClaimState,
    Conflict,
    Finish,
    Owner,
    TickTaken,
)
from candlekeep.scheduler.spec import JobSpec, backoff_delay, document, retries_of
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB, dialect_insert, make_engine
from candlekeep.state.rows import (
    JOB_COLUMNS,
    NODE_COLUMNS,
    JobRow,
    NodeRow,
    ScheduleRow,
    node_row,
)
from candlekeep.state.scheduler_tables import (
    scheduler_jobs,
    scheduler_nodes,
    scheduler_schedules,
)
from candlekeep.state.statuses import LIVE_STATUSES, RunStatus, Trigger

DEFAULT_HEARTBEAT_S = 5.0
LEASE_FACTOR = 3
DEFAULT_LEASE_MS = int(DEFAULT_HEARTBEAT_S * LEASE_FACTOR * 1000)
ORPHAN_RETRY_MS = 15 * 60_000
"""A due retry no live node has started for this long is given up: no node that has the
job configured (with the same spec) is running."""
_CHUNK = 1000
_PG_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
_RUNNING, _WAITING = RunStatus.RUNNING.value, RunStatus.WAITING.value
_LIVE = [s.value for s in LIVE_STATUSES]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a state-DB call may wait on PostgreSQL before it fails instead of hanging."""

    lock_s: float = 5.0
    statement_s: float = 10.0
    connect_s: float = 5.0


class SchedulerStore:
    def __init__(self, state: StateDB, owner: Owner | None = None, *,
                 max_skip_rows: int = 1000, pooled: bool = False,
                 db_clock: bool | None = None, timeouts: Timeouts | None = None,
                 rng: random.Random | None = None) -> None:
        """``owner``: who this process's runs belong to (None: a read-only store).
        ``pooled``: keep connections open (the daemon; call ``dispose``).
        ``db_clock``: judge leases by PostgreSQL's clock (default there); tests that move
        a fake clock over PostgreSQL turn it off."""
        self.state = state
        self.owner = owner
        self.is_pg = state.dialect == "postgresql"
        self.timeouts = timeouts or Timeouts()
        self.engine = _own_engine(state, self.timeouts) if (pooled or self.is_pg) \
            else state.engine
        self.max_skip_rows = max_skip_rows
        self.db_clock = self.is_pg if db_clock is None else db_clock
        self.rng = rng or random.Random()

    @property
    def lease_ms(self) -> int:
        return self.owner.lease_ms if self.owner else DEFAULT_LEASE_MS

    def _me(self) -> Owner:
        if self.owner is None:
            raise RuntimeError("this scheduler store was opened without an owner")
        return self.owner

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that holds the write lock from its first statement."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        else:
            with self.engine.begin() as conn:
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        """INSERT … ON CONFLICT DO NOTHING in either dialect."""
        return dialect_insert("postgresql" if self.is_pg else "sqlite",
                              table).on_conflict_do_nothing()

    def _now(self, now_ms: int) -> Any:
        """The lease clock as a SQL expression: the database's, or the caller's."""
        if self.db_clock:
            return sa.literal_column(_PG_NOW, sa.BigInteger)
        return sa.literal(now_ms, sa.BigInteger)

    def _now_text(self) -> str:
        """The lease clock inside hand-written SQL (binds ``:now`` otherwise)."""
        return _PG_NOW if self.db_clock else ":now"

    def db_now_ms(self) -> int | None:
        """The state DB's clock (PostgreSQL), for measuring this node's skew."""
        if not self.is_pg:
            return None
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT {_PG_NOW}")).scalar_one())

    # -- jobs ----------------------------------------------------------------------------

    def ensure_jobs(self, specs: Sequence[JobSpec], now_ms: int,
                    since: dict[str, int] | None = None) -> dict[str, JobRow]:
        """Register ``specs`` as this node configures them; returns every job's row.

        A new job starts counting ticks from now (or from ``since[job]``: a timer run
        registers the job as of the tick it runs). A job whose stored spec differs takes
        ours: we are starting with this config. When its schedule, zone or enabled flag
        changed, ``last_tick`` moves to now, so the new schedule has no phantom backlog,
        and the schedule history gains a period for SLOs.
        """
        node = self._me().node
        c = scheduler_jobs.c
        since = since or {}
        with self._write() as conn:
            rows = {r.job: JobRow(*r) for r in conn.execute(_select_jobs().where(
                c.job.in_([s.name for s in specs])))}
            history: list[dict[str, Any]] = []
            for s in specs:
                start = since.get(s.name, now_ms)
                doc = json.dumps(document(s), sort_keys=True)
                trig = s.trigger
                sched = {"schedule": trig.expr if trig else None,
                         "timezone": trig.timezone if trig else None}
                row = rows.get(s.name)
                if row is None:
                    self._add_job(conn, s, start, now_ms)
                    history.append({"job": s.name, "since": start, **sched,
                                    "enabled": s.enabled})
                    continue
                if row.spec_hash == s.digest:
                    continue
                values: dict[str, Any] = {**sched, "spec": doc, "spec_hash": s.digest,
                                          "spec_by": node, "spec_at": now_ms,
                                          "updated_at": now_ms, "updated_by": node}
                if _timing_changed(row, s):
                    values["last_tick"] = max(row.last_tick, now_ms)
                    history.append({"job": s.name, "since": now_ms, **sched,
                                    "enabled": s.enabled})
                conn.execute(scheduler_jobs.update().where(c.job == s.name).values(**values))
            if history:
                conn.execute(self._insert(scheduler_schedules), history)
            found = conn.execute(_select_jobs().where(
                c.job.in_([s.name for s in specs]))).all()
        return {r.job: JobRow(*r) for r in found}

    def _add_job(self, conn: Connection, spec: JobSpec, first_tick: int, now_ms: int) -> None:
        """The job's row, if it has none: ticks count from ``first_tick``, spec ours."""
        trig = spec.trigger
        node = self._me().node
        conn.execute(self._insert(scheduler_jobs).values(
            job=spec.name, schedule=trig.expr if trig else None,
            timezone=trig.timezone if trig else None, last_tick=first_tick,
            created_at=first_tick, updated_at=now_ms, updated_by=node,
            spec=json.dumps(document(spec), sort_keys=True), spec_hash=spec.digest,
            spec_by=node, spec_at=now_ms))

    def job_rows(self) -> dict[str, JobRow]:
        with self.engine.connect() as conn:
            return {r.job: JobRow(*r) for r in conn.execute(_select_jobs())}

    def schedules(self) -> dict[str, list[ScheduleRow]]:
        """Each job's schedule history, oldest period first."""
        sc = scheduler_schedules.c
        out: dict[str, list[ScheduleRow]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(scheduler_schedules).order_by(sc.job, sc.since)):
                out.setdefault(r.job, []).append(
                    ScheduleRow(r.job, r.since, r.schedule, r.timezone, bool(r.enabled)))
        return out

    # -- claiming ------------------------------------------------------------------------

    def claim(self, specs: Sequence[JobSpec], now_ms: int, *,
              clock_ms: int | None = None) -> list[ClaimOutcome]:
        """Account for every tick of ``specs`` due by ``now_ms`` and claim those to run.

        ``now_ms`` may be a tick a moment away (the engine claims ahead); ``clock_ms`` is
        the present, by which leases are judged where the database's clock is not used.
        """
        out: list[ClaimOutcome] = []
        ordered = sorted(specs, key=lambda s: s.name)  # one lock order: no deadlocks
        for i in range(0, len(ordered), _CHUNK):
            out += self._claim_chunk(ordered[i:i + _CHUNK], now_ms,
                                     now_ms if clock_ms is None else min(clock_ms, now_ms))
        return out

    def _claim_chunk(self, specs: Sequence[JobSpec], now_ms: int,
                     clock_ms: int) -> list[ClaimOutcome]:
        me = self._me()
        names = [s.name for s in specs]
        with self._write() as conn:
            rows = self._lock_jobs(conn, names, skip_locked=True)
            outcomes: list[ClaimOutcome] = []
            mine: list[JobSpec] = []
            missing = [n for n in names if n not in rows]
            absent = set(missing) - self._existing(conn, missing) if missing else set()
            for s in specs:
                row = rows.get(s.name)
                if row is None:
                    if s.name in absent:  # registered nowhere yet: start counting now
                        self._add_job(conn, s, now_ms, now_ms)
                        outcomes.append(ClaimOutcome(s.name, ClaimState.CLAIMED,
                                                     last_tick=now_ms))
                    else:
                        outcomes.append(ClaimOutcome(s.name, ClaimState.LOCKED))
                elif row.spec_hash is not None and row.spec_hash != s.digest:
                    outcomes.append(ClaimOutcome(s.name, ClaimState.CONFLICT,
                                                 last_tick=row.last_tick, conflict=row))
                else:
                    mine.append(s)
            live = self._live_counts(conn, [s.name for s in mine], clock_ms,
                                     {s.name: s.retries for s in mine})
            to_run: list[tuple[str, int]] = []
            skip_rows: list[dict[str, Any]] = []
            moved: list[tuple[str, int]] = []
            for s in mine:
                prev = rows[s.name].last_tick
                d = decide(s, prev, now_ms, s.max_concurrent - live.get(s.name, 0),
                           self.max_skip_rows)
                outcomes.append(ClaimOutcome(
                    s.name, ClaimState.PENDING if d.pending else ClaimState.CLAIMED,
                    skipped=d.skipped_total, last_tick=d.last_tick))
                to_run += [(s.name, tick) for tick in d.run]
                skip_rows += [_skip_row(s.name, tick, why, me, now_ms) for tick, why in d.skip]
                if d.last_tick != prev:
                    moved.append((s.name, d.last_tick))
            if skip_rows:
                conn.execute(self._insert(t.runs), skip_rows)
            claimed: dict[str, list[ClaimedRun]] = {}
            for run in self._insert_runs(conn, to_run, now_ms):
                claimed.setdefault(run.job, []).append(run)
            if moved:
                self._move_ticks(conn, moved, now_ms)
        for o in outcomes:
            o.runs = sorted(claimed.get(o.job, []), key=lambda r: r.scheduled_for)
        return outcomes

    # PostgreSQL gets array-parameter statements: one parse and plan for a thousand rows
    # instead of a thousand-row VALUES list (which made claims ~5x slower there).

    def _lock_jobs(self, conn: Connection, names: list[str], *,
                   skip_locked: bool) -> dict[str, JobRow]:
        if self.is_pg:
            tail = " SKIP LOCKED" if skip_locked else ""
            rows = conn.execute(sa.text(
                f"SELECT {', '.join(JOB_COLUMNS)} FROM scheduler_jobs WHERE "
                f"job = ANY(CAST(:jobs AS text[])) ORDER BY job FOR UPDATE{tail}"),
                {"jobs": names})
        else:
            rows = conn.execute(_select_jobs().where(scheduler_jobs.c.job.in_(names)))
        return {r[0]: JobRow(*r) for r in rows}

    def _existing(self, conn: Connection, names: list[str]) -> set[str]:
        c = scheduler_jobs.c
        return {r[0] for r in conn.execute(sa.select(c.job).where(c.job.in_(names)))}

    def _live_counts(self, conn: Connection, jobs: list[str], now_ms: int,
                     policies: dict[str, RetriesConfig]) -> dict[str, int]:
        """Live runs per job of ``jobs`` (locked by us), after reaping expired leases.

        All live rows are read, not just these jobs': few rows, found through the status
        index; filtering on job would walk each job's whole history instead.
        """
        if not jobs:
            return {}
        wanted = set(jobs)
        rc = t.runs.c
        rows = [r for r in conn.execute(sa.select(
            *_reapable(), (rc.lease_until < self._now(now_ms)).label("expired"),
        ).where(rc.status.in_(_LIVE))) if r.job in wanted]
        expired = [r for r in rows if r.status == _RUNNING and r.expired]
        reaped = self._reap(conn, expired, now_ms, policies, "lease expired") if expired \
            else []
        # A reaped run's slot passes to its retry when it gets one; else it is free.
        freed = {a.run_id for a in reaped if a.retry_id is None}
        counts: dict[str, int] = {}
        for r in rows:
            if r.id not in freed:
                counts[r.job] = counts.get(r.job, 0) + 1
        return counts

    def _insert_runs(self, conn: Connection, to_run: list[tuple[str, int]],
                     now_ms: int) -> list[ClaimedRun]:
        if not to_run:
            return []
        me = self._me()
        rc = t.runs.c
        if self.is_pg:
            res = conn.execute(sa.text(
                "INSERT INTO runs (job, scheduled_for, attempt, node, instance, trigger, "
                "started_at, heartbeat_at, lease_until, status, rows_written, requests) "
                f"SELECT u.j, u.s, 1, :node, :inst, 'schedule', :now, {self._now_text()}, "
                f"{self._now_text()} + :lease, 'running', 0, 0 "
                "FROM unnest(CAST(:jobs AS text[]), CAST(:ticks AS bigint[])) AS u(j, s) "
                "ON CONFLICT DO NOTHING RETURNING id, job, scheduled_for"),
                {"node": me.node, "inst": me.instance, "now": now_ms, "lease": me.lease_ms,
                 "jobs": [j for j, _ in to_run], "ticks": [tick for _, tick in to_run]})
        else:
            res = conn.execute(
                self._insert(t.runs).returning(rc.id, rc.job, rc.scheduled_for),
                [self._running_row(j, tick, 1, Trigger.SCHEDULE, now_ms) for j, tick in to_run])
        return [ClaimedRun(r[0], r[1], r[2]) for r in res]

    def _running_row(self, job: str, tick: int, attempt: int, trigger: Trigger,
                     now_ms: int) -> dict[str, Any]:
        """A new running row; its lease dated by the lease clock (an expression on
        PostgreSQL, so only for single-row inserts there)."""
        me = self._me()
        now = self._now(now_ms) if self.db_clock else now_ms
        return {"job": job, "scheduled_for": tick, "attempt": attempt, "node": me.node,
                "instance": me.instance, "trigger": trigger.value, "started_at": now_ms,
                "heartbeat_at": now, "lease_until": now + me.lease_ms,
                "status": _RUNNING, "rows_written": 0, "requests": 0}

    def _move_ticks(self, conn: Connection, moved: list[tuple[str, int]],
                    now_ms: int) -> None:
        node = self._me().node
        if self.is_pg:
            conn.execute(sa.text(
                "UPDATE scheduler_jobs AS sj SET last_tick = u.t, updated_at = :now, "
                "updated_by = :node FROM unnest(CAST(:jobs AS text[]), "
                "CAST(:ticks AS bigint[])) AS u(j, t) WHERE sj.job = u.j"),
                {"now": now_ms, "node": node, "jobs": [j for j, _ in moved],
                 "ticks": [tick for _, tick in moved]})
            return
        jc = scheduler_jobs.c
        conn.execute(
            scheduler_jobs.update().where(jc.job == sa.bindparam("k_job")).values(
                last_tick=sa.bindparam("k_last"), updated_at=now_ms, updated_by=node),
            [{"k_job": j, "k_last": tick} for j, tick in moved])

    # -- reaping (abandoning expired runs) ------------------------------------------------

    def _reap(self, conn: Connection, rows: Sequence[Any], now_ms: int,
              policies: dict[str, RetriesConfig], why: str) -> list[Abandoned]:
        """Mark ``rows`` abandoned (only while still running and, unless ``why`` is a known
        death, still expired), and give each whose job has attempts left its next attempt
        as an unowned ``waiting`` row. The caller holds the jobs' locks."""
        rc = t.runs.c
        out: list[Abandoned] = []
        expired_only = why == "lease expired"
        for r in rows:
            q = t.runs.update().where(rc.id == r.id, rc.status == _RUNNING)
            if expired_only:
                q = q.where(rc.lease_until < self._now(now_ms))
            err = (f"abandoned: {why} (node {r.node}, instance {r.instance or '?'}) at "
                   f"{fmt_ms(now_ms)}")
            if not conn.execute(q.values(status=RunStatus.ABANDONED.value, finished_at=now_ms,
                                         error=err)).rowcount:
                continue
            retry_id = None
            policy = policies.get(r.job) or RetriesConfig()
            if r.attempt < policy.attempts:
                delay = backoff_delay(policy, r.attempt, self.rng)
                row = conn.execute(self._insert(t.runs).returning(rc.id), [{
                    "job": r.job, "scheduled_for": r.scheduled_for, "attempt": r.attempt + 1,
                    "node": r.node, "instance": None, "trigger": r.trigger,
                    "started_at": None, "heartbeat_at": None, "lease_until": None,
                    "not_before": now_ms + int(delay * 1000), "status": _WAITING,
                    "rows_written": 0, "requests": 0}]).first()
                if row is not None:
                    retry_id = int(row[0])
            out.append(Abandoned(r.id, r.job, r.node, r.instance, r.process, retry_id,
                                 r.attempt))
        return out

    def sweep(self, now_ms: int) -> list[Abandoned]:
        """Abandon runs whose owner's lease expired (any node does this), give up retries no
        node starts, and mark nodes that stopped heartbeating dead."""
        rc, nc = t.runs.c, scheduler_nodes.c
        with self._write() as conn:
            expired = conn.execute(sa.select(*_reapable()).where(
                rc.status == _RUNNING, rc.lease_until < self._now(now_ms))).all()
            out: list[Abandoned] = []
            if expired:
                jobs = sorted({r.job for r in expired})
                locked = self._lock_jobs(conn, jobs, skip_locked=True)
                policies = {j: retries_of(_doc(row)) for j, row in locked.items()}
                out = self._reap(conn, [r for r in expired if r.job in locked], now_ms,
                                 policies, "lease expired")
            conn.execute(t.runs.update().where(
                rc.status == _WAITING, rc.not_before < now_ms - ORPHAN_RETRY_MS,
                sa.or_(rc.instance.is_(None), rc.lease_until < self._now(now_ms)),
            ).values(status=RunStatus.ABANDONED.value, finished_at=now_ms,
                     error="abandoned: no live node started this retry (is the job still "
                           "configured, with the same spec, on a running node?)"))
            conn.execute(scheduler_nodes.update().where(
                nc.status == "running", nc.lease_until < self._now(now_ms),
            ).values(status="dead"))
        return out

    def abandon_instance(self, instance: str, now_ms: int, why: str) -> list[Abandoned]:
        """Close the live runs of a process known to be dead (our own predecessor): its
        running rows are abandoned now (with their retries), its waiting retries freed for
        anyone. Returns what was abandoned, with the process groups it had recorded."""
        rc = t.runs.c
        with self._write() as conn:
            rows = conn.execute(sa.select(*_reapable()).where(
                rc.instance == instance, rc.status.in_(_LIVE))).all()
            running = [r for r in rows if r.status == _RUNNING]
            out: list[Abandoned] = []
            if running:
                locked = self._lock_jobs(conn, sorted({r.job for r in running}),
                                         skip_locked=False)
                policies = {j: retries_of(_doc(row)) for j, row in locked.items()}
                out = self._reap(conn, running, now_ms, policies, why)
            conn.execute(t.runs.update().where(
                rc.instance == instance, rc.status == _WAITING).values(
                instance=None, lease_until=None))
        return out

    def leftover_processes(self, instance: str) -> list[tuple[int, str]]:
        """(run id, process identity) of every run of ``instance`` that recorded one."""
        rc = t.runs.c
        with self.engine.connect() as conn:
            return [(r.id, r.process) for r in conn.execute(
                sa.select(rc.id, rc.process).where(rc.instance == instance,
                                                   rc.process.is_not(None)))]

    # -- manual starts and adoption -------------------------------------------------------

    def start_manual(self, spec: JobSpec, now_ms: int, *, trigger: Trigger = Trigger.MANUAL,
                     scheduled_for: int | None = None, force: bool = False,
                     dead: Callable[[str], bool] | None = None
                     ) -> ClaimedRun | Busy | TickTaken:
        """A run started outside the daemon's ticks: by hand (``candlekeep run``, a data
        command) or by a system timer for a tick (``scheduled_for``).

        The slot check and the insert happen under the job's row lock, the lock a claim
        takes, so a manual run and a scheduled one never both slip into the last slot; a
        job nobody registered yet gets its row first, so two manual starts serialise too.
        """
        rc = t.runs.c
        with self._write() as conn:
            self._add_job(conn, spec, now_ms, now_ms)
            self._lock_jobs(conn, [spec.name], skip_locked=False)
            if scheduled_for is not None:
                taken = conn.execute(sa.select(rc.id, rc.node, rc.status).where(
                    rc.job == spec.name, rc.scheduled_for == scheduled_for,
                    rc.attempt == 1)).first()
                if taken is not None:
                    return TickTaken(taken.id, taken.node, taken.status)
            if not force:
                if dead is not None:
                    self._reap_dead(conn, spec, now_ms, dead)
                live = self._live_counts(conn, [spec.name], now_ms,
                                         {spec.name: spec.retries})
                if live.get(spec.name, 0) >= spec.max_concurrent:
                    first = conn.execute(sa.select(rc.id, rc.node, rc.status).where(
                        rc.job == spec.name, rc.status.in_(_LIVE)).order_by(rc.id)).first()
                    if first is not None:
                        return Busy(first.node, first.id, first.status)
            ticks = [scheduled_for] if scheduled_for is not None else range(now_ms,
                                                                            now_ms + 100)
            for tick in ticks:
                # A manual run at a scheduled tick's very millisecond steps aside.
                row = conn.execute(self._insert(t.runs).values(
                    **self._running_row(spec.name, tick, 1, trigger, now_ms),
                ).returning(rc.id)).first()
                if row is not None:
                    return ClaimedRun(int(row[0]), spec.name, tick, 1, trigger)
        raise RuntimeError(f"could not record a manual run of {spec.name}")

    def _reap_dead(self, conn: Connection, spec: JobSpec, now_ms: int,
                   dead: Callable[[str], bool]) -> None:
        rc = t.runs.c
        rows = conn.execute(sa.select(*_reapable()).where(
            rc.job == spec.name, rc.status == _RUNNING)).all()
        gone = [r for r in rows if r.instance and dead(r.instance)]
        if gone:
            self._reap(conn, gone, now_ms, {spec.name: spec.retries},
                       "its process is gone (found dead on this host)")

    def skip_tick(self, job: str, tick: int, now_ms: int, why: str) -> None:
        """Record a timer's tick as skipped (its job was still running)."""
        row = {**_skip_row(job, tick, why, self._me(), now_ms), "trigger": Trigger.TIMER.value}
        with self._write() as conn:
            conn.execute(self._insert(t.runs).values(**row))

    def adopt(self, jobs: Sequence[str], now_ms: int, limit: int = 100) -> list[ClaimedRun]:
        """Start due retries of ``jobs`` whose creator is gone (its lease lapsed, or it let
        go when it stopped): they become running attempts owned by us."""
        if not jobs:
            return []
        me = self._me()
        rc = t.runs.c
        with self._write() as conn:
            q = sa.select(rc.id).where(
                rc.status == _WAITING, rc.not_before <= now_ms, rc.job.in_(list(jobs)),
                sa.or_(rc.instance.is_(None), rc.instance == me.instance,
                       rc.lease_until < self._now(now_ms)),
            ).order_by(rc.not_before).limit(limit)
            if self.is_pg:
                q = q.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(q)]
            if not ids:
                return []
            res = conn.execute(t.runs.update().where(
                rc.id.in_(ids), rc.status == _WAITING).values(
                status=_RUNNING, node=me.node, instance=me.instance, started_at=now_ms,
                heartbeat_at=self._now(now_ms), lease_until=self._now(now_ms) + me.lease_ms,
            ).returning(rc.id, rc.job, rc.scheduled_for, rc.attempt, rc.trigger))
            return [ClaimedRun(r.id, r.job, r.scheduled_for, r.attempt, Trigger(r.trigger))
                    for r in res]

    def next_waiting(self, jobs: Sequence[str]) -> int | None:
        """The earliest ``not_before`` among waiting retries of ``jobs``."""
        if not jobs:
            return None
        rc = t.runs.c
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.min(rc.not_before)).where(
                rc.status == _WAITING, rc.job.in_(list(jobs)))).scalar()
        return None if value is None else int(value)

    # -- the owner's writes ----------------------------------------------------------------

    def heartbeat(self, run_ids: Sequence[int], now_ms: int, *, node_row: bool = False,
                  skew_ms: int | None = None, conflicts: Sequence[str] | None = None) -> Beat:
        """Extend the lease of ``run_ids`` (the live rows this process works on); report
        which of them are still ours.

        A row missing from ``held`` was taken from us (our lease expired while we stalled):
        the caller must stop that run (self-fencing). Only rows the caller names are kept
        alive, so a row it forgot can never be held forever.
        """
        me = self._me()
        rc, nc = t.runs.c, scheduler_nodes.c
        now = self._now(now_ms)
        ids = list(run_ids)
        with self._write() as conn:
            held: set[int] = set()
            for i in range(0, len(ids), _CHUNK):
                held.update(int(r[0]) for r in conn.execute(t.runs.update().where(
                    rc.id.in_(ids[i:i + _CHUNK]), rc.instance == me.instance,
                    rc.status.in_(_LIVE)).values(
                    heartbeat_at=now, lease_until=now + me.lease_ms).returning(rc.id)))
            db_now: int | None = None
            ours = True
            if node_row:
                values: dict[str, Any] = {"heartbeat_at": now,
                                          "lease_until": now + me.lease_ms,
                                          "status": "running", "skew_ms": skew_ms}
                if conflicts is not None:
                    values["conflicts"] = json.dumps(sorted(conflicts))
                row = conn.execute(scheduler_nodes.update().where(
                    nc.node == me.node, nc.instance == me.instance).values(**values)
                    .returning(nc.heartbeat_at)).first()
                ours = row is not None
                db_now = int(row[0]) if row is not None and self.is_pg else None
            elif self.is_pg:
                db_now = int(conn.execute(sa.text(f"SELECT {_PG_NOW}")).scalar_one())
        return Beat(frozenset(held), db_now, ours)

    def finish_many(self, finishes: Sequence[Finish]) -> list[Conflict]:
        """Record finished runs still live and ours; the others come back as conflicts."""
        if not finishes:
            return []
        me = self._me()
        rc = t.runs.c
        with self._write() as conn:
            if self.is_pg:
                done = {int(r[0]) for r in conn.execute(sa.text(
                    "UPDATE runs AS r SET status = u.st, finished_at = u.fa, "
                    "started_at = COALESCE(u.sa, r.started_at), rows_written = u.rw, "
                    "requests = u.rq, error = u.er, lease_until = NULL "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:sts AS text[]), "
                    "CAST(:fas AS bigint[]), CAST(:sas AS bigint[]), CAST(:rws AS bigint[]), "
                    "CAST(:rqs AS bigint[]), CAST(:ers AS text[])) "
                    "AS u(id, st, fa, sa, rw, rq, er) "
                    "WHERE r.id = u.id AND r.status = 'running' AND r.instance = :inst "
                    "RETURNING r.id"),
                    {"ids": [f.run_id for f in finishes],
                     "sts": [f.status.value for f in finishes],
                     "fas": [f.finished_at for f in finishes],
                     "sas": [f.started_at for f in finishes],
                     "rws": [f.rows_written for f in finishes],
                     "rqs": [f.requests for f in finishes],
                     "ers": [clean_text(f.error) for f in finishes], "inst": me.instance})}
            else:
                # One writer at a time on SQLite (BEGIN IMMEDIATE): which rows are still
                # ours cannot change between this read and the update below.
                done = set()
                ids = [f.run_id for f in finishes]
                for i in range(0, len(ids), _CHUNK):
                    done.update(r[0] for r in conn.execute(sa.select(rc.id).where(
                        rc.id.in_(ids[i:i + _CHUNK]), rc.status == _RUNNING,
                        rc.instance == me.instance)))
                mine = [f for f in finishes if f.run_id in done]
                if mine:
                    conn.execute(t.runs.update().where(rc.id == sa.bindparam("k_id")).values(
                        status=sa.bindparam("k_status"), finished_at=sa.bindparam("k_at"),
                        started_at=sa.func.coalesce(sa.bindparam("k_start"), rc.started_at),
                        rows_written=sa.bindparam("k_rows"), requests=sa.bindparam("k_req"),
                        error=sa.bindparam("k_err"), lease_until=None),
                        [{"k_id": f.run_id, "k_status": f.status.value, "k_at": f.finished_at,
                          "k_start": f.started_at, "k_rows": f.rows_written,
                          "k_req": f.requests, "k_err": clean_text(f.error)} for f in mine])
            lost = [f for f in finishes if f.run_id not in done]
            return self._conflicts(conn, lost)

    def _conflicts(self, conn: Connection, lost: Sequence[Finish]) -> list[Conflict]:
        if not lost:
            return []
        rc = t.runs.c
        found = {r.id: r for r in conn.execute(sa.select(rc.id, rc.status, rc.node).where(
            rc.id.in_([f.run_id for f in lost])))}
        return [Conflict(f.run_id, f.status, getattr(found.get(f.run_id), "status", None),
                         getattr(found.get(f.run_id), "node", None)) for f in lost]

    def retry(self, failed: Finish, scheduled_for: int, job: str, attempt: int,
              trigger: Trigger, not_before_ms: int) -> int | Conflict:
        """Close a failed attempt and reserve the next one as ``waiting`` (ours until
        ``not_before``, then anyone's once our lease lapses), atomically: the job's slot
        passes from one to the other. A Conflict when the attempt is no longer ours."""
        me = self._me()
        rc = t.runs.c
        with self._write() as conn:
            values: dict[str, Any] = {
                "status": failed.status.value, "finished_at": failed.finished_at,
                "rows_written": failed.rows_written, "requests": failed.requests,
                "error": clean_text(failed.error), "lease_until": None}
            if failed.started_at is not None:
                values["started_at"] = failed.started_at
            if not conn.execute(t.runs.update().where(
                    rc.id == failed.run_id, rc.status == _RUNNING,
                    rc.instance == me.instance).values(**values)).rowcount:
                return self._conflicts(conn, [failed])[0]
            now = self._now(failed.finished_at)
            row = conn.execute(self._insert(t.runs).values(
                job=job, scheduled_for=scheduled_for, attempt=attempt, node=me.node,
                instance=me.instance, trigger=trigger.value, started_at=None,
                heartbeat_at=now, lease_until=now + me.lease_ms, not_before=not_before_ms,
                status=_WAITING, rows_written=0, requests=0).returning(rc.id)).first()
            if row is None:  # that attempt exists already (someone reaped and retried)
                return Conflict(failed.run_id, failed.status, "retried elsewhere", None)
            return int(row[0])

    def start_waiting(self, run_id: int, now_ms: int) -> bool:
        """Our retry's backoff is over: start it, unless someone adopted or closed it."""
        me = self._me()
        rc = t.runs.c
        with self._write() as conn:
            return bool(conn.execute(t.runs.update().where(
                rc.id == run_id, rc.status == _WAITING,
                sa.or_(rc.instance == me.instance, rc.instance.is_(None),
                       rc.lease_until < self._now(now_ms)),
            ).values(status=_RUNNING, node=me.node, instance=me.instance, started_at=now_ms,
                     heartbeat_at=self._now(now_ms),
                     lease_until=self._now(now_ms) + me.lease_ms)).rowcount)

    def release_waiting(self, run_ids: Sequence[int]) -> int:
        """Let go of our waiting retries (the daemon is stopping): any node starts them
        when due."""
        if not run_ids:
            return 0
        rc = t.runs.c
        with self._write() as conn:
            return int(conn.execute(t.runs.update().where(
                rc.id.in_(list(run_ids)), rc.status == _WAITING,
                rc.instance == self._me().instance).values(
                instance=None, lease_until=None)).rowcount)

    def cancel_waiting(self, run_id: int, now_ms: int, why: str) -> bool:
        """Give up our waiting retry (the user interrupted ``candlekeep run``)."""
        rc = t.runs.c
        with self._write() as conn:
            return bool(conn.execute(t.runs.update().where(
                rc.id == run_id, rc.status == _WAITING,
                rc.instance == self._me().instance).values(
                status=RunStatus.CANCELLED.value, finished_at=now_ms,
                error=clean_text(why), lease_until=None)).rowcount)

    def set_process(self, run_id: int, identity: str | None) -> None:
        rc = t.runs.c
        with self._write() as conn:
            conn.execute(t.runs.update().where(
                rc.id == run_id, rc.instance == self._me().instance).values(process=identity))

    # -- reads ---------------------------------------------------------------------------

    def live_runs(self, job: str | None = None) -> list[Any]:
        rc = t.runs.c
        q = sa.select(t.runs).where(rc.status.in_(_LIVE)).order_by(rc.scheduled_for)
        if job is not None:
            q = q.where(rc.job == job)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def dispose(self) -> None:
        if self.engine is not self.state.engine:
            self.engine.dispose()

    # -- nodes ---------------------------------------------------------------------------

    def get_node(self, node: str) -> NodeRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(scheduler_nodes).where(
                scheduler_nodes.c.node == node)).first()
        return None if r is None else _node_row(r)

    def register_node(self, pid: int, now_ms: int, version: str) -> NodeRow | None:
        """Write our node row (this instance now holds the name); returns the row as it
        was, so the caller can deal with a predecessor that died without saying so."""
        me = self._me()
        nc = scheduler_nodes.c
        values = {"host": me.host, "pid": pid, "started_at": now_ms,
                  "heartbeat_at": self._now(now_ms),
                  "lease_until": self._now(now_ms) + me.lease_ms, "stopped_at": None,
                  "status": "running", "lease_ms": me.lease_ms, "version": version,
                  "instance": me.instance, "skew_ms": None, "conflicts": None}
        with self._write() as conn:
            old = conn.execute(sa.select(scheduler_nodes).where(nc.node == me.node)).first()
            if old is None:
                conn.execute(scheduler_nodes.insert().values(node=me.node, **values))
            else:
                conn.execute(scheduler_nodes.update().where(nc.node == me.node)
                             .values(**values))
        return None if old is None else _node_row(old)

    def node_stopped(self, now_ms: int) -> None:
        me = self._me()
        nc = scheduler_nodes.c
        with self._write() as conn:
            conn.execute(scheduler_nodes.update().where(
                nc.node == me.node, nc.instance == me.instance).values(
                status="stopped", stopped_at=now_ms, heartbeat_at=self._now(now_ms),
                lease_until=None))


def _own_engine(state: StateDB, timeouts: Timeouts) -> Engine:
    """An engine of the scheduler's own.

    SQLite: one connection kept open. StateDB opens one per transaction; closing the last
    connection to a WAL database checkpoints it, which made every heartbeat cost
    milliseconds. PostgreSQL: a pool whose sessions never wait longer than the lease
    allows: lock and statement timeouts, a connect timeout and TCP keepalives.
    """
    return make_engine(state.url, pooled=True, lock_timeout_s=timeouts.lock_s,
                       statement_timeout_s=timeouts.statement_s,
                       connect_timeout_s=timeouts.connect_s)


def _reapable() -> tuple[Any, ...]:
    """What reaping a run needs to know of it (see ``_reap``)."""
    rc = t.runs.c
    return (rc.id, rc.job, rc.status, rc.scheduled_for, rc.attempt, rc.trigger, rc.node,
            rc.instance, rc.process)


def _timing_changed(row: JobRow, spec: JobSpec) -> bool:
    """Whether a stored job fires differently under ``spec`` (schedule, zone, enabled)."""
    trig = spec.trigger
    old = _doc(row)
    old_enabled = old.get("enabled", True) if old else True
    return (row.schedule != (trig.expr if trig else None)
            or row.timezone != (trig.timezone if trig else None)
            or old_enabled != spec.enabled)


def _doc(row: JobRow) -> dict[str, Any]:
    try:
        raw = json.loads(row.spec) if row.spec else {}
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _skip_row(job: str, tick: int, why: str, me: Owner, now_ms: int) -> dict[str, Any]:
    return {"job": job, "scheduled_for": tick, "attempt": 1, "node": me.node,
            "instance": me.instance, "trigger": Trigger.SCHEDULE.value, "started_at": None,
            "finished_at": now_ms, "heartbeat_at": None, "status": RunStatus.SKIPPED.value,
            "rows_written": 0, "requests": 0, "error": why}


def _select_jobs() -> Any:
    return sa.select(*(scheduler_jobs.c[n] for n in JOB_COLUMNS))


def _node_row(r: Any) -> NodeRow:
    return node_row([getattr(r, n) for n in NODE_COLUMNS])
