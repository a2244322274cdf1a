"""The scheduler's durable state: claiming ticks, recording runs, heartbeats and leases.

Synchronous (SQLAlchemy Core); the engine calls it from one worker thread. Every method is
one transaction, so a daemon killed at any instant leaves the state DB consistent.

Claiming is a batch: for all jobs due at once, one transaction locks their
``scheduler_jobs`` rows (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite, whose single writer serialises the same way), counts their live runs, lets the
misfire policy decide, inserts the run rows and moves ``last_tick``. The unique
``(job, scheduled_for, attempt)`` key stays the last line of defence.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from candlekeep.core.timeutil import fmt_ms
from candlekeep.scheduler.misfire import decide
from candlekeep.scheduler.spec import JobSpec
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from candlekeep.state.scheduler_tables import scheduler_jobs, scheduler_nodes

LIVE_STATUSES = ("running", "waiting")
"""A run holds one of its job's ``max_concurrent`` slots while in these states; ``waiting``
is an attempt sleeping out its retry backoff."""

DEFAULT_HEARTBEAT_S = 5.0
LEASE_FACTOR = 3
DEFAULT_LEASE_MS = int(DEFAULT_HEARTBEAT_S * LEASE_FACTOR * 1000)
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    run_id: int
    job: str
    scheduled_for: int
    attempt: int = 1


@dataclass(slots=True)
class ClaimOutcome:
    job: str
    runs: list[ClaimedRun]
    skipped: int
    last_tick: int
    pending: bool


@dataclass(frozen=True, slots=True)
class Finish:
    run_id: int
    status: str
    finished_at: int
    rows_written: int = 0
    requests: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """The live run that keeps a job from starting now."""

    node: str
    run_id: int


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    host: str
    pid: int
    started_at: int
    heartbeat_at: int
    stopped_at: int | None
    status: str
    lease_ms: int

    def alive(self, now_ms: int) -> bool:
        return self.status == "running" and now_ms - self.heartbeat_at <= self.lease_ms


@dataclass(frozen=True, slots=True)
class JobRow:
    job: str
    schedule: str | None
    timezone: str | None
    last_tick: int
    created_at: int


def _err(text: str | None, limit: int = 4000) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SchedulerStore:
    def __init__(self, state: StateDB, *, lease_ms: int | None = None,
                 max_skip_rows: int = 1000, pooled: bool = False) -> None:
        """``pooled``: keep a SQLite connection open (the daemon; call ``dispose``)."""
        self.state = state
        self.engine = _own_engine(state) if pooled else state.engine
        self.lease_ms = lease_ms or DEFAULT_LEASE_MS
        self.max_skip_rows = max_skip_rows
        self.is_pg = self.engine.dialect.name == "postgresql"

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
        ins = postgresql.insert(table) if self.is_pg else sqlite.insert(table)
        return ins.on_conflict_do_nothing()

    # -- jobs ----------------------------------------------------------------------------

    def ensure_jobs(self, specs: Sequence[JobSpec], now_ms: int, node: str) -> dict[str, int]:
        """Rows for the scheduled jobs; a new job starts counting ticks from now.

        Disabled jobs have their ``last_tick`` moved to now, so enabling one later does not
        treat the disabled period as missed.
        """
        c = scheduler_jobs.c
        with self._write() as conn:
            rows = [_job_row(s, now_ms, node) for s in specs if s.trigger is not None]
            if rows:
                conn.execute(self._insert(scheduler_jobs), rows)
            for s in specs:
                if s.trigger is None:
                    continue
                values: dict[str, Any] = {"schedule": s.trigger.expr,
                                          "timezone": s.trigger.timezone}
                q = scheduler_jobs.update().where(c.job == s.name)
                if not s.enabled:
                    q = q.where(c.last_tick < now_ms)
                    values.update(last_tick=now_ms, updated_at=now_ms, updated_by=node)
                else:
                    q = q.where(sa.or_(c.schedule.is_distinct_from(s.trigger.expr),
                                       c.timezone.is_distinct_from(s.trigger.timezone)))
                conn.execute(q.values(**values))
            found = conn.execute(sa.select(c.job, c.last_tick)).all()
        names = {s.name for s in specs}
        return {r.job: r.last_tick for r in found if r.job in names}

    def advance_jobs(self, names: Sequence[str], now_ms: int, node: str) -> None:
        """Move disabled jobs' ``last_tick`` along (see ``ensure_jobs``)."""
        if not names:
            return
        c = scheduler_jobs.c
        with self._write() as conn:
            conn.execute(scheduler_jobs.update().where(
                c.job.in_(list(names)), c.last_tick < now_ms).values(
                last_tick=now_ms, updated_at=now_ms, updated_by=node))

    def job_rows(self) -> dict[str, JobRow]:
        with self.engine.connect() as conn:
            return {r.job: JobRow(r.job, r.schedule, r.timezone, r.last_tick, r.created_at)
                    for r in conn.execute(sa.select(scheduler_jobs))}

    # -- claiming ------------------------------------------------------------------------

    def claim(self, specs: Sequence[JobSpec], now_ms: int, node: str) -> list[ClaimOutcome]:
        """Account for every due tick of ``specs`` and claim those to run now."""
        out: list[ClaimOutcome] = []
        ordered = sorted(specs, key=lambda s: s.name)  # one lock order: no deadlocks
        for i in range(0, len(ordered), _CHUNK):
            out += self._claim_chunk(ordered[i:i + _CHUNK], now_ms, node)
        return out

    def _claim_chunk(self, specs: Sequence[JobSpec], now_ms: int,
                     node: str) -> list[ClaimOutcome]:
        rc = t.runs.c
        names = [s.name for s in specs]
        with self._write() as conn:
            last = self._lock_jobs(conn, names)
            # All live runs, not just these jobs': few rows, found through the status
            # index; filtering on job would walk each job's whole history instead.
            live: dict[str, int] = {r[0]: r[1] for r in conn.execute(
                sa.select(rc.job, sa.func.count()).where(
                    rc.status.in_(LIVE_STATUSES), rc.heartbeat_at >= now_ms - self.lease_ms,
                ).group_by(rc.job))}
            outcomes: list[ClaimOutcome] = []
            to_run: list[tuple[str, int]] = []
            skip_rows: list[dict[str, Any]] = []
            moved: list[tuple[str, int]] = []
            missing: list[dict[str, Any]] = []
            for spec in specs:
                prev = last.get(spec.name)
                if prev is None:  # not ensured yet (config reloaded elsewhere): start now
                    missing.append(_job_row(spec, now_ms, node))
                    outcomes.append(ClaimOutcome(spec.name, [], 0, now_ms, False))
                    continue
                d = decide(spec, prev, now_ms, spec.max_concurrent - live.get(spec.name, 0),
                           self.max_skip_rows)
                outcomes.append(ClaimOutcome(spec.name, [], d.skipped_total, d.last_tick,
                                             d.pending))
                to_run += [(spec.name, tick) for tick in d.run]
                for tick, why in d.skip:
                    skip_rows.append({
                        "job": spec.name, "scheduled_for": tick, "attempt": 1, "node": node,
                        "trigger": "schedule", "started_at": None, "finished_at": now_ms,
                        "heartbeat_at": None, "status": "skipped", "rows_written": 0,
                        "requests": 0, "error": why})
                if d.last_tick != prev:
                    moved.append((spec.name, d.last_tick))
            if missing:
                conn.execute(self._insert(scheduler_jobs), missing)
            if skip_rows:
                conn.execute(self._insert(t.runs), skip_rows)
            claimed: dict[str, list[ClaimedRun]] = {}
            for run in self._insert_runs(conn, to_run, node, now_ms):
                claimed.setdefault(run.job, []).append(run)
            if moved:
                self._move_ticks(conn, moved, node, now_ms)
        for o in outcomes:
            o.runs = sorted(claimed.get(o.job, []), key=lambda r: r.scheduled_for)
        return outcomes

    # PostgreSQL gets array-parameter statements: one parse and plan for a thousand rows
    # instead of a thousand-row VALUES list (which made claims ~5x slower there).

    def _lock_jobs(self, conn: Connection, names: list[str]) -> dict[str, int]:
        if self.is_pg:
            rows = conn.execute(sa.text(
                "SELECT job, last_tick FROM scheduler_jobs WHERE job = ANY(CAST(:jobs AS "
                "text[])) ORDER BY job FOR UPDATE"), {"jobs": names})
        else:
            jc = scheduler_jobs.c
            rows = conn.execute(sa.select(jc.job, jc.last_tick).where(jc.job.in_(names)))
        return {r[0]: r[1] for r in rows}

    def _insert_runs(self, conn: Connection, to_run: list[tuple[str, int]], node: str,
                     now_ms: int) -> list[ClaimedRun]:
        if not to_run:
            return []
        rc = t.runs.c
        if self.is_pg:
            res = conn.execute(sa.text(
                "INSERT INTO runs (job, scheduled_for, attempt, node, trigger, started_at, "
                "heartbeat_at, status, rows_written, requests) "
                "SELECT u.j, u.s, 1, :node, 'schedule', :now, :now, 'running', 0, 0 "
                "FROM unnest(CAST(:jobs AS text[]), CAST(:ticks AS bigint[])) AS u(j, s) "
                "ON CONFLICT DO NOTHING RETURNING id, job, scheduled_for"),
                {"node": node, "now": now_ms, "jobs": [j for j, _ in to_run],
                 "ticks": [tick for _, tick in to_run]})
        else:
            res = conn.execute(
                self._insert(t.runs).returning(rc.id, rc.job, rc.scheduled_for),
                [{"job": j, "scheduled_for": tick, "attempt": 1, "node": node,
                  "trigger": "schedule", "started_at": now_ms, "heartbeat_at": now_ms,
                  "status": "running", "rows_written": 0, "requests": 0}
                 for j, tick in to_run])
        return [ClaimedRun(r[0], r[1], r[2]) for r in res]

    def _move_ticks(self, conn: Connection, moved: list[tuple[str, int]], node: str,
                    now_ms: int) -> None:
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

    # -- runs ----------------------------------------------------------------------------

    def start_manual(self, job: str, now_ms: int, node: str,
                     max_concurrent: int | None = None) -> tuple[int, int] | Busy:
        """A hand-started run (``candlekeep run``): (run id, its scheduled_for).

        With ``max_concurrent``, the slot check and the insert happen under the same job
        lock a claim takes, so a manual run and a scheduled one cannot both slip into the
        last slot; when the job is full, returns the live run in the way instead.
        """
        rc = t.runs.c
        with self._write() as conn:
            if max_concurrent is not None:
                self._lock_jobs(conn, [job])
                live = conn.execute(sa.select(t.runs).where(
                    rc.job == job, rc.status.in_(LIVE_STATUSES),
                    rc.heartbeat_at >= now_ms - self.lease_ms,
                ).order_by(rc.id)).all()
                if len(live) >= max_concurrent:
                    return Busy(live[0].node, live[0].id)
            for tick in range(now_ms, now_ms + 100):
                # A scheduled tick at this very millisecond: step aside to the next one.
                row = conn.execute(self._insert(t.runs).returning(rc.id), [{
                    "job": job, "scheduled_for": tick, "attempt": 1, "node": node,
                    "trigger": "manual", "started_at": now_ms, "heartbeat_at": now_ms,
                    "status": "running", "rows_written": 0, "requests": 0}]).first()
                if row is not None:
                    return int(row[0]), tick
        raise RuntimeError(f"could not record a manual run of {job}")

    def live_runs(self, job: str | None = None, now_ms: int | None = None) -> list[Any]:
        rc = t.runs.c
        q = sa.select(t.runs).where(rc.status.in_(LIVE_STATUSES)).order_by(rc.scheduled_for)
        if job is not None:
            q = q.where(rc.job == job)
        if now_ms is not None:
            q = q.where(rc.heartbeat_at >= now_ms - self.lease_ms)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def finish_many(self, finishes: Sequence[Finish]) -> None:
        if not finishes:
            return
        rc = t.runs.c
        with self._write() as conn:
            if self.is_pg:
                conn.execute(sa.text(
                    "UPDATE runs AS r SET status = u.st, finished_at = u.fa, "
                    "rows_written = u.rw, requests = u.rq, error = u.er "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:sts AS text[]), "
                    "CAST(:fas AS bigint[]), CAST(:rws AS bigint[]), CAST(:rqs AS bigint[]), "
                    "CAST(:ers AS text[])) AS u(id, st, fa, rw, rq, er) WHERE r.id = u.id"),
                    {"ids": [f.run_id for f in finishes], "sts": [f.status for f in finishes],
                     "fas": [f.finished_at for f in finishes],
                     "rws": [f.rows_written for f in finishes],
                     "rqs": [f.requests for f in finishes],
                     "ers": [_err(f.error) for f in finishes]})
                return
            conn.execute(
                t.runs.update().where(rc.id == sa.bindparam("k_id")).values(
                    status=sa.bindparam("k_status"), finished_at=sa.bindparam("k_at"),
                    rows_written=sa.bindparam("k_rows"), requests=sa.bindparam("k_req"),
                    error=sa.bindparam("k_err")),
                [{"k_id": f.run_id, "k_status": f.status, "k_at": f.finished_at,
                  "k_rows": f.rows_written, "k_req": f.requests, "k_err": _err(f.error)}
                 for f in finishes])

    def retry(self, failed: Finish, job: str, scheduled_for: int, attempt: int, node: str,
              trigger: str, now_ms: int) -> int | None:
        """Close a failed attempt and reserve the next one as ``waiting``, atomically, so the
        job's slot stays held through the backoff; None if that attempt exists already."""
        with self._write() as conn:
            conn.execute(t.runs.update().where(t.runs.c.id == failed.run_id).values(
                status=failed.status, finished_at=failed.finished_at,
                rows_written=failed.rows_written, requests=failed.requests,
                error=_err(failed.error)))
            res = conn.execute(self._insert(t.runs).returning(t.runs.c.id), [{
                "job": job, "scheduled_for": scheduled_for, "attempt": attempt, "node": node,
                "trigger": trigger, "started_at": None, "heartbeat_at": now_ms,
                "status": "waiting", "rows_written": 0, "requests": 0}])
            row = res.first()
        return None if row is None else int(row[0])

    def start_waiting(self, run_id: int, now_ms: int) -> bool:
        """A retry's backoff is over; False if the run was abandoned in the meantime."""
        rc = t.runs.c
        with self._write() as conn:
            n = conn.execute(t.runs.update().where(rc.id == run_id, rc.status == "waiting")
                             .values(status="running", started_at=now_ms,
                                     heartbeat_at=now_ms)).rowcount
        return bool(n)

    def housekeep(self, run_ids: Sequence[int], node: str | None, now_ms: int,
                  disabled: Sequence[str] = ()) -> list[tuple[int, str, str]]:
        """The periodic beat in one transaction: heartbeat our runs and node, sweep expired
        leases, keep disabled jobs' ``last_tick`` current."""
        with self._write() as conn:
            self._heartbeat(conn, run_ids, node, now_ms)
            swept = self._sweep(conn, now_ms)
            if disabled:
                c = scheduler_jobs.c
                conn.execute(scheduler_jobs.update().where(
                    c.job.in_(list(disabled)), c.last_tick < now_ms).values(
                    last_tick=now_ms, updated_at=now_ms, updated_by=node))
        return swept

    def heartbeat(self, run_ids: Sequence[int], node: str | None, now_ms: int) -> None:
        with self._write() as conn:
            self._heartbeat(conn, run_ids, node, now_ms)

    def _heartbeat(self, conn: Connection, run_ids: Sequence[int], node: str | None,
                   now_ms: int) -> None:
        rc = t.runs.c
        for i in range(0, len(run_ids), _CHUNK):
            conn.execute(t.runs.update().where(
                rc.id.in_(list(run_ids[i:i + _CHUNK])), rc.status.in_(LIVE_STATUSES),
            ).values(heartbeat_at=now_ms))
        if node is not None:
            conn.execute(scheduler_nodes.update().where(
                scheduler_nodes.c.node == node).values(heartbeat_at=now_ms,
                                                       status="running"))

    def sweep(self, now_ms: int) -> list[tuple[int, str, str]]:
        """Mark runs whose owner stopped heartbeating ``abandoned``; (id, job, node) each.

        A run's lease is the longer of ours and its node's, so a node with a slow heartbeat
        is not robbed by one with a fast heartbeat.
        """
        with self._write() as conn:
            return self._sweep(conn, now_ms)

    def _sweep(self, conn: Connection, now_ms: int) -> list[tuple[int, str, str]]:
        rc, nc = t.runs.c, scheduler_nodes.c
        leases = {r[0]: r[1] for r in conn.execute(sa.select(nc.node, nc.lease_ms))}
        oldest = now_ms - self.lease_ms
        rows = conn.execute(sa.select(rc.id, rc.job, rc.node, rc.heartbeat_at).where(
            rc.status.in_(LIVE_STATUSES), rc.heartbeat_at < oldest)).all()
        # A node that never registered (a 'candlekeep run' process) beats at the default.
        dead = [r for r in rows if now_ms - r.heartbeat_at > max(
            self.lease_ms, leases.get(r.node, DEFAULT_LEASE_MS))]
        if dead:
            conn.execute(t.runs.update().where(  # no IN list: this is an executemany
                rc.id == sa.bindparam("k_id"),
                sa.or_(*(rc.status == s for s in LIVE_STATUSES))).values(
                status="abandoned", finished_at=now_ms, error=sa.bindparam("k_err")),
                [{"k_id": r.id, "k_err": f"abandoned: node {r.node} stopped "
                  f"heartbeating at {fmt_ms(r.heartbeat_at)} (lease expired)"}
                 for r in dead])
        conn.execute(scheduler_nodes.update().where(
            nc.status == "running", nc.heartbeat_at + nc.lease_ms < now_ms,
        ).values(status="dead"))
        return [(r.id, r.job, r.node) for r in dead]

    def abandon_node_runs(self, node: str, now_ms: int, reason: str) -> int:
        """Close every live run of ``node`` (a previous process of ours that died)."""
        rc = t.runs.c
        with self._write() as conn:
            return int(conn.execute(t.runs.update().where(
                rc.node == node, rc.status.in_(LIVE_STATUSES)).values(
                status="abandoned", finished_at=now_ms, error=reason)).rowcount)

    def dispose(self) -> None:
        if self.engine is not self.state.engine:
            self.engine.dispose()

    # -- nodes ---------------------------------------------------------------------------

    def get_node(self, node: str) -> NodeRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(scheduler_nodes).where(
                scheduler_nodes.c.node == node)).first()
        return None if r is None else _node_row(r)

    def nodes(self) -> list[NodeRow]:
        with self.engine.connect() as conn:
            return [_node_row(r) for r in conn.execute(
                sa.select(scheduler_nodes).order_by(scheduler_nodes.c.node))]

    def register_node(self, node: str, pid: int, now_ms: int, version: str) -> None:
        values = {"host": socket.gethostname(), "pid": pid, "started_at": now_ms,
                  "heartbeat_at": now_ms, "stopped_at": None, "status": "running",
                  "lease_ms": self.lease_ms, "version": version}
        with self._write() as conn:
            n = conn.execute(scheduler_nodes.update().where(
                scheduler_nodes.c.node == node).values(**values)).rowcount
            if not n:
                conn.execute(scheduler_nodes.insert().values(node=node, **values))

    def node_stopped(self, node: str, now_ms: int) -> None:
        with self._write() as conn:
            conn.execute(scheduler_nodes.update().where(scheduler_nodes.c.node == node)
                         .values(status="stopped", stopped_at=now_ms, heartbeat_at=now_ms))


def _own_engine(state: StateDB) -> Engine:
    """For SQLite, an engine that keeps one connection open.

    StateDB opens a connection per transaction; closing the last connection to a WAL
    database checkpoints it, which made every heartbeat cost milliseconds. The daemon's
    steady trickle of small transactions wants the connection kept.
    """
    if state.engine.dialect.name != "sqlite":
        return state.engine
    engine = sa.create_engine(state.url, connect_args={"timeout": 30,
                                                       "check_same_thread": False},
                              poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=4)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def _job_row(spec: JobSpec, now_ms: int, node: str) -> dict[str, Any]:
    trig = spec.trigger
    return {"job": spec.name, "schedule": trig.expr if trig else None,
            "timezone": trig.timezone if trig else None, "last_tick": now_ms,
            "created_at": now_ms, "updated_at": now_ms, "updated_by": node}


def _node_row(r: Any) -> NodeRow:
    return NodeRow(r.node, r.host, r.pid, r.started_at, r.heartbeat_at, r.stopped_at,
                   r.status, r.lease_ms)
