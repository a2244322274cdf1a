"""The read side of the state DB: what ``list``, ``status`` and ``history`` show, as typed
rows, over a plain DB-API connection.

Plain SQL on ``sqlite3`` or ``psycopg`` rather than SQLAlchemy: importing SQLAlchemy costs
more than the whole rest of ``candlekeep list``, and these few read-only queries need none
of it. A daemon (or the HTTP API) that has an engine already passes its raw connection,
so every reader runs the very same statements.

Every statement is written once, with ``:name`` parameters, in SQL both SQLite and
PostgreSQL accept; each answers from an index (see tests/queries/test_indexes.py).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlekeep.core.series import SeriesKey
from candlekeep.state.rows import (
    JOB_COLUMNS,
    NODE_COLUMNS,
    FreshnessRow,
    GapRow,
    JobRow,
    NodeRow,
    RunRow,
    SeriesStateRow,
    node_row,
)

TERMINAL = ("success", "failed", "timed_out", "cancelled", "abandoned", "skipped")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")
"""String literals and quoted identifiers: what a parameter rewrite must leave alone."""


def pyformat_sql(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``, with every other ``%`` doubled (a
    ``LIKE 'BTC%'`` would otherwise be read as a placeholder); text inside quotes is left
    as written, but for its ``%``."""
    parts = _QUOTED.split(sql)
    for i, part in enumerate(parts):
        part = part.replace("%", "%%")
        parts[i] = part if i % 2 else _PARAM.sub(r"%(\1)s", part)
    return "".join(parts)


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

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Any read-only statement, written with ``:name`` parameters in SQL both engines
        accept (report sections and plug-ins use it)."""
        if self.pyformat:
            sql = pyformat_sql(sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params or {})
            return list(cur.fetchall())
        finally:
            cur.close()

    def ping_ms(self) -> float:
        start = time.perf_counter()
        self.rows("SELECT 1")
        return (time.perf_counter() - start) * 1000

    def job_rows(self) -> dict[str, JobRow]:
        return {r[0]: JobRow(*r) for r in self.rows(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM scheduler_jobs")}

    def last_runs(self, jobs: Sequence[str]) -> dict[str, LastRun]:
        """Each job's latest started run: one probe of ``ix_runs_job_started`` per job,
        never a pass over its history."""
        if not jobs:
            return {}
        names, params = _in_list(jobs)
        rows = self.rows(
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
        rows = self.rows(
            "SELECT job, COUNT(DISTINCT CASE WHEN status = 'success' THEN scheduled_for END), "
            f"COUNT(DISTINCT CASE WHEN status IN ({ended}) THEN scheduled_for END) "
            f"FROM runs WHERE job IN ({names}) AND scheduled_for >= :since GROUP BY job",
            {**params, **more, "since": since_ms})
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def nodes(self) -> list[NodeRow]:
        return [node_row(r) for r in self.rows(
            f"SELECT {', '.join(NODE_COLUMNS)} FROM scheduler_nodes ORDER BY node")]

    def runs(self, job: str | None = None, since_ms: int | None = None,
             status: str | Sequence[str] | None = None, limit: int | None = 200,
             offset: int = 0) -> list[RunRow]:
        """Newest first; ``ix_runs_scheduled`` (or the per-job unique index) is read from
        its end, so a page costs the same whatever the history behind it (plus
        ``offset`` rows, which callers bound)."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {}
        if job is not None:
            where.append("job = :job")
            params["job"] = job
        if since_ms is not None:
            where.append("scheduled_for >= :since")
            params["since"] = since_ms
        if isinstance(status, str):
            where.append("status = :status")
            params["status"] = status
        elif status is not None:
            names, more = _in_list(list(status), "s")
            where.append(f"status IN ({names or 'NULL'})")
            params.update(more)
        tail = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
        rows = self.rows(
            'SELECT id, job, scheduled_for, attempt, node, "trigger", started_at, '
            "finished_at, status, rows_written, requests, error FROM runs WHERE "
            f"{' AND '.join(where)} ORDER BY scheduled_for DESC, attempt DESC{tail}", params)
        return [RunRow(*r) for r in rows]

    def run_counts(self, since_ms: int, until_ms: int) -> dict[tuple[str, str], int]:
        """Runs per (job, status) scheduled in ``[since_ms, until_ms]``: a range of
        ``ix_runs_scheduled``, bounded by the window (with one bound only, SQLite's planner
        walks all of ``ix_runs_job_started`` instead)."""
        rows = self.rows("SELECT job, status, COUNT(*) FROM runs WHERE scheduled_for "
                          "BETWEEN :since AND :until GROUP BY job, status",
                          {"since": since_ms, "until": until_ms})
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def last_successes(self, jobs: Sequence[str]) -> dict[str, int]:
        """Each job's latest successful run's end: ``ix_runs_job_started`` read from its
        end until the first success (so a job failing for long reads its failures)."""
        if not jobs:
            return {}
        names, params = _in_list(jobs)
        rows = self.rows(
            "SELECT j.job, (SELECT x.finished_at FROM runs x WHERE x.job = j.job AND "
            "x.started_at IS NOT NULL AND x.status = 'success' ORDER BY x.started_at DESC "
            f"LIMIT 1) FROM scheduler_jobs j WHERE j.job IN ({names})", params)
        return {r[0]: int(r[1]) for r in rows if r[1] is not None}

    def open_gaps(self) -> int:
        return int(self.rows("SELECT COUNT(*) FROM gaps WHERE status = 'open'")[0][0])

    def gaps(self, status: str | None = None, source: str | None = None,
             symbol: str | None = None, timeframe: str | None = None,
             limit: int | None = None, offset: int = 0) -> list[GapRow]:
        """Gaps in series order (``uq_gaps_series_start``; with a status, ``ix_gaps_status``
        narrows the read to that status first)."""
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {}
        for column, value in (("status", status), ("source", source), ("symbol", symbol),
                              ("timeframe", timeframe)):
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        tail = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
        rows = self.rows(
            f"SELECT {_GAP_COLUMNS} FROM gaps WHERE {' AND '.join(where)} "
            f"ORDER BY source, symbol, timeframe, gap_start{tail}", params)
        return [_gap_row(r) for r in rows]

    def gap_totals(self, statuses: Sequence[str]) -> list[GapTotal]:
        """Per series and status: how many gaps, and the sum of their lengths (``gap_end -
        gap_start``), read through ``ix_gaps_status`` for those statuses only."""
        names, params = _in_list(statuses, "s")
        rows = self.rows(
            "SELECT source, symbol, timeframe, status, COUNT(*), SUM(gap_end - gap_start) "
            f"FROM gaps WHERE status IN ({names}) GROUP BY source, symbol, timeframe, status",
            params)
        return [GapTotal(SeriesKey(r[0], r[1], r[2]), r[3], int(r[4]), int(r[5] or 0))
                for r in rows]

    def gap_status_counts(self) -> dict[str, int]:
        """Gaps per status (an index-only pass over ``ix_gaps_status``)."""
        return {r[0]: int(r[1]) for r in self.rows(
            "SELECT status, COUNT(*) FROM gaps GROUP BY status")}

    def repaired_since(self, since_ms: int) -> int:
        """Gaps repaired since ``since_ms`` (a range of ``ix_gaps_status_repaired``)."""
        return int(self.rows(
            "SELECT COUNT(*) FROM gaps WHERE status = 'repaired' AND repaired_at >= :since",
            {"since": since_ms})[0][0])

    def oldest_open_gap(self) -> GapRow | None:
        """The open gap detected first (``ix_gaps_status``: open gaps only)."""
        rows = self.rows(f"SELECT {_GAP_COLUMNS} FROM gaps WHERE status = 'open' "
                          "ORDER BY detected_at, id LIMIT 1")
        return _gap_row(rows[0]) if rows else None

    def series_state(self, store: str | None = None) -> list[SeriesStateRow]:
        """The newest candle per store and series as the write path last recorded it: one
        row per series, whatever the size of the candle tables behind it."""
        where, params = ("WHERE store = :store", {"store": store}) if store else ("", {})
        return [SeriesStateRow(*r) for r in self.rows(
            "SELECT store, source, symbol, timeframe, first_ms, last_ms, rows, updated_at, "
            f"scanned_at FROM series_state {where}", params)]

    def checkpoint_positions(self, job: str) -> dict[SeriesKey, int]:
        """Every series' checkpoint position under ``job``."""
        return {SeriesKey(src, sym, tf): int(pos) for src, sym, tf, pos in self.rows(
            "SELECT source, symbol, timeframe, position FROM checkpoints WHERE job = :job",
            {"job": job})}

    def freshness(self) -> list[FreshnessRow]:
        """The last freshness verdict of every subject."""
        return [FreshnessRow(*r) for r in self.rows(
            "SELECT kind, store, subject, newest_ms, age_ms, threshold_ms, rows, status, "
            "detail, checked_at, status_since FROM freshness ORDER BY kind, store, subject")]


@dataclass(frozen=True, slots=True)
class GapTotal:
    """Gaps of one series in one status: their number and summed ``gap_end - gap_start``
    (a gap holds ``(gap_end - gap_start) / step + 1`` candles)."""

    series: SeriesKey
    status: str
    count: int
    span_ms: int

    def candles(self, step_ms: int) -> int:
        return self.span_ms // step_ms + self.count


_GAP_COLUMNS = ("id, source, symbol, timeframe, gap_start, gap_end, detected_at, repaired_at, "
                "status, attempts, empty_attempts, last_error")


def _gap_row(r: Sequence[Any]) -> GapRow:
    return GapRow(r[0], SeriesKey(r[1], r[2], r[3]), *r[4:])


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
            found = reader.rows("SELECT MAX(version) FROM candlekeep_schema")[0][0]
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
