"""The read side of the state DB: what ``list``, ``status`` and ``history`` show, as typed
rows, over a plain DB-API connection.

Plain SQL on ``sqlite3`` or ``psycopg`` rather than SQLAlchemy: importing SQLAlchemy costs
more than the whole rest of ``candlekeep list``, and these few read-only queries need none
of it. A daemon (or the HTTP API) that has an engine already passes its raw connection,
so every reader runs the very same statements.

Every statement is written once, with ``:name`` parameters, in SQL both SQLite and
PostgreSQL accept; each answers from an index (see tests/scheduler/test_reports.py).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlekeep.state.rows import (
    JOB_COLUMNS,
    NODE_COLUMNS,
    FreshnessRow,
    JobRow,
    NodeRow,
    RunRow,
    SeriesStateRow,
    node_row,
)

TERMINAL = ("success", "failed", "timed_out", "cancelled", "abandoned", "skipped")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True, slots=True)
class LastRun:
    job: str
    scheduled_for: int
    started_at: int | None
    finished_at: int | None
    status: str


class Reader:
    """Read-only queries over one DB-API connection (``paramstyle`` named or pyformat)."""

    def __init__(self, conn: Any, *, pyformat: bool) -> None:
        self.conn = conn
        self.pyformat = pyformat

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self.pyformat:
            sql = _PARAM.sub(r"%(\1)s", sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params or {})
            return list(cur.fetchall())
        finally:
            cur.close()

    def ping_ms(self) -> float:
        start = time.perf_counter()
        self._rows("SELECT 1")
        return (time.perf_counter() - start) * 1000

    def job_rows(self) -> dict[str, JobRow]:
        return {r[0]: JobRow(*r) for r in self._rows(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM scheduler_jobs")}

    def last_runs(self, jobs: Sequence[str]) -> dict[str, LastRun]:
        """Each job's latest started run: one probe of ``ix_runs_job_started`` per job,
        never a pass over its history."""
        if not jobs:
            return {}
        names, params = _in_list(jobs)
        rows = self._rows(
            "SELECT r.job, r.scheduled_for, r.started_at, r.finished_at, r.status FROM runs r "
            "WHERE r.id IN (SELECT (SELECT x.id FROM runs x WHERE x.job = j.job AND "
            "x.started_at IS NOT NULL ORDER BY x.started_at DESC LIMIT 1) "
            f"FROM scheduler_jobs j WHERE j.job IN ({names}))", params)
        return {r[0]: LastRun(*r) for r in rows}

    def success_rates(self, jobs: Sequence[str], since_ms: int) -> dict[str, tuple[int, int]]:
        """Ticks that succeeded / ticks that ended, per job, since ``since_ms``: the unique
        ``(job, scheduled_for, attempt)`` index bounds the read to the window."""
        if not jobs:
            return {}
        names, params = _in_list(jobs)
        ended, more = _in_list(TERMINAL, "s")
        rows = self._rows(
            "SELECT job, COUNT(DISTINCT CASE WHEN status = 'success' THEN scheduled_for END), "
            f"COUNT(DISTINCT CASE WHEN status IN ({ended}) THEN scheduled_for END) "
            f"FROM runs WHERE job IN ({names}) AND scheduled_for >= :since GROUP BY job",
            {**params, **more, "since": since_ms})
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def nodes(self) -> list[NodeRow]:
        return [node_row(r) for r in self._rows(
            f"SELECT {', '.join(NODE_COLUMNS)} FROM scheduler_nodes ORDER BY node")]

    def runs(self, job: str | None = None, since_ms: int | None = None,
             status: str | None = None, limit: int | None = 200) -> list[RunRow]:
        """Newest first; ``ix_runs_scheduled`` (or the per-job unique index) is read from
        its end, so a page costs the same whatever the history behind it."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {}
        if job is not None:
            where.append("job = :job")
            params["job"] = job
        if since_ms is not None:
            where.append("scheduled_for >= :since")
            params["since"] = since_ms
        if status is not None:
            where.append("status = :status")
            params["status"] = status
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        rows = self._rows(
            'SELECT id, job, scheduled_for, attempt, node, "trigger", started_at, '
            "finished_at, status, rows_written, requests, error FROM runs WHERE "
            f"{' AND '.join(where)} ORDER BY scheduled_for DESC, attempt DESC{tail}", params)
        return [RunRow(*r) for r in rows]

    def open_gaps(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM gaps WHERE status = 'open'")[0][0])

    def series_state(self, store: str | None = None) -> list[SeriesStateRow]:
        """The newest candle per store and series as the write path last recorded it: one
        row per series, whatever the size of the candle tables behind it."""
        where, params = ("WHERE store = :store", {"store": store}) if store else ("", {})
        return [SeriesStateRow(*r) for r in self._rows(
            "SELECT store, source, symbol, timeframe, first_ms, last_ms, rows, updated_at, "
            f"scanned_at FROM series_state {where}", params)]

    def freshness(self) -> list[FreshnessRow]:
        """The last freshness verdict of every subject."""
        return [FreshnessRow(*r) for r in self._rows(
            "SELECT kind, store, subject, newest_ms, age_ms, threshold_ms, rows, status, "
            "detail, checked_at, status_since FROM freshness ORDER BY kind, store, subject")]


def _in_list(values: Sequence[str], prefix: str = "j") -> tuple[str, dict[str, str]]:
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{k}" for k in params), params


@contextlib.contextmanager
def open_reader(url: str, schema_version: int) -> Iterator[Reader | None]:
    """A reader straight on the state DB's driver, when the DB is there and current;
    None when it is not (missing file, older schema): the caller then goes through
    StateDB, which creates or upgrades it."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or not Path(path).exists():
            yield None
            return
        conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        pyformat = False
    else:
        import psycopg

        dsn = url.split("+psycopg", 1)[0] + url.split("+psycopg", 1)[1] \
            if "+psycopg" in url else url
        conn = psycopg.connect(dsn.replace("postgres://", "postgresql://", 1),
                               connect_timeout=10, autocommit=True)
        pyformat = True
    try:
        reader = Reader(conn, pyformat=pyformat)
        try:
            found = reader._rows("SELECT MAX(version) FROM candlekeep_schema")[0][0]
        except Exception:
            found = None
        yield reader if found == schema_version else None
    finally:
        conn.close()


@contextlib.contextmanager
def reading(url: str, data_dir: Path) -> Iterator[Reader]:
    """A reader on the state DB at ``url``; the first time (no DB yet, or an older
    schema) StateDB creates or upgrades it first. What every listing opens."""
    from candlekeep.state.version import SCHEMA_VERSION

    with open_reader(url, SCHEMA_VERSION) as reader:
        if reader is not None:
            yield reader
            return
    data_dir.mkdir(parents=True, exist_ok=True)
    from candlekeep.state.db import StateDB

    StateDB(url).dispose()
    with open_reader(url, SCHEMA_VERSION) as reader:
        if reader is None:
            from candlekeep.core.errors import CandlekeepError

            raise CandlekeepError("cannot read the state DB (its schema is not current)")
        yield reader
