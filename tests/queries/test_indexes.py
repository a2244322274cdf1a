"""What ``list``, ``history`` and ``slo`` cost and count: reading a job's latest run or the
last page of history must not grow with the years of history behind it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from candlekeep.queries.jobs import job_overview
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from candlekeep.state.reader import Reader
from tests.scheduler.helpers import ms, spec

NOW = ms("2025-06-01T00:00:00")
DAY = 86_400_000
JOBS = [spec(f"j{i}", "*/5 * * * *") for i in range(3)]


def history(db: StateDB, old_rows: int) -> None:
    """The last week's runs (the same in every DB) behind ``old_rows`` older ones."""
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(JOBS):
        recent = [NOW - k * 300_000 for k in range(1, 301)]
        old = [NOW - 30 * DAY - k * 60_000 for k in range(old_rows // len(JOBS))]
        for k, tick in enumerate(recent + old):
            status = "skipped" if k % 7 == 3 else "success" if k % 5 else "failed"
            rows.append({"job": s.name, "scheduled_for": tick, "attempt": 1, "node": "n",
                         "trigger": "schedule", "status": status,
                         "started_at": None if status == "skipped" else tick + i,
                         "finished_at": tick + 50, "rows_written": 1, "requests": 1})
    with db.engine.begin() as conn:
        for chunk in range(0, len(rows), 20_000):
            conn.execute(t.runs.insert(), rows[chunk:chunk + 20_000])


def work(db: StateDB, what: str) -> int:
    """SQLite virtual-machine steps (in hundreds) to answer ``what``: the database's own
    measure of work, exact and repeatable, unlike a timing."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def listen(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(count, 100)

    if what == "list":
        conn = sqlite3.connect(db.url.split(":///", 1)[1])
        conn.set_progress_handler(count, 100)
        try:
            job_overview(JOBS, Reader(conn, pyformat=False), NOW)
        finally:
            conn.close()
        return steps[0]
    sa.event.listen(db.engine, "connect", listen)
    try:
        db.list_runs(limit=200)
        db.list_runs(job="j1", limit=50)
    finally:
        sa.event.remove(db.engine, "connect", listen)
    return steps[0]


def test_list_and_history_do_not_read_whole_histories(tmp_path: Path) -> None:
    small = StateDB(f"sqlite:///{tmp_path / 'small.db'}")
    big = StateDB(f"sqlite:///{tmp_path / 'big.db'}")
    for db, old in ((small, 3_000), (big, 150_000)):
        SchedulerStore(db, Owner("n", "h/1/x", 15_000)).ensure_jobs(JOBS, NOW - 365 * DAY)
        history(db, old)
    for what in ("list", "history"):
        w_small, w_big = work(small, what), work(big, what)
        assert w_big <= 1.2 * w_small + 10, (what, w_small, w_big)
    with sqlite3.connect(big.url.split(":///", 1)[1]) as conn:
        (latest,) = [o for o in job_overview(JOBS, Reader(conn, pyformat=False), NOW)
                     if o.name == "j2"]
    assert latest.last_scheduled_for == NOW - 300_000  # newest started run, not skipped
    assert latest.runs_7d == 300


class Recording:
    """A sqlite3 connection that keeps every statement a Reader runs, with its params."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    def cursor(self) -> Any:
        outer = self

        class Cursor:
            def __init__(self) -> None:
                self.cur = outer.conn.cursor()

            def execute(self, sql: str, params: Any) -> None:
                outer.statements.append((sql, params))
                self.cur.execute(sql, params)

            def fetchall(self) -> list[Any]:
                return self.cur.fetchall()

            def close(self) -> None:
                self.cur.close()

        return Cursor()


SMALL = ("scheduler_jobs", "scheduler_nodes", "series_state", "freshness", "candlekeep_schema")
"""One row per configured job, node, series or watched subject: read whole by design."""


def test_every_listing_query_reads_runs_and_gaps_through_an_index(tmp_path: Path) -> None:
    """Whatever the API and the CLI ask, SQLite's plan never scans ``runs`` or ``gaps``
    row by row: each statement searches or walks an index."""
    db = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    SchedulerStore(db, Owner("n", "h/1/x", 15_000)).ensure_jobs(JOBS, NOW - DAY)
    history(db, 300)
    db.dispose()
    conn = sqlite3.connect(tmp_path / "state.db")
    rec = Recording(conn)
    reader = Reader(rec, pyformat=False)
    names = [s.name for s in JOBS]
    reader.runs(job="j1", status="failed", since_ms=NOW - DAY, limit=10, offset=5)
    reader.runs(limit=10)
    reader.runs(status="failed", limit=10)
    reader.runs(since_ms=NOW - DAY, limit=10)
    reader.runs(status=["failed", "timed_out", "abandoned"], limit=10)
    reader.run_counts(NOW - DAY, NOW + DAY)
    reader.last_successes(names)
    reader.last_runs(names)
    reader.success_rates(names, NOW - 7 * DAY)
    reader.gaps(status="open", source="s", symbol="BTC/USDT", timeframe="1m", limit=5)
    reader.gaps(status="open", limit=100, offset=10)
    reader.gaps(status="failed", source="s", limit=100)
    reader.gaps(limit=100, offset=10)
    reader.gap_totals(("confirmed_empty", "open", "failed"))
    reader.gap_status_counts()
    reader.repaired_since(NOW - DAY)
    reader.oldest_open_gap()
    reader.open_gaps()
    plans = {}
    for sql, params in rec.statements:
        lines = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        plans[sql] = lines
        for line in lines:
            words = line.split()
            if words[0] == "SCAN" and words[1] not in SMALL:
                assert "INDEX" in line, (sql, lines)
        # A page (or the first row) is read in order from an index, never by sorting
        # every matching row first. Several statuses at once (the dashboard's failures)
        # are the exception: one ordered range per status would need the reader to merge
        # them (a UNION ALL of per-status pages); their rows, failures kept for the run
        # history's horizon, are sorted instead.
        if " LIMIT " in sql and "status IN (" not in sql:
            assert not [x for x in lines if "TEMP B-TREE" in x], (sql, lines)
    assert len(plans) >= 16
    (counts,) = [lines for sql, lines in plans.items() if "GROUP BY job, status" in sql]
    assert counts[0].startswith("SEARCH runs USING INDEX ix_runs_scheduled"), counts
    (oldest,) = [lines for sql, lines in plans.items() if "ORDER BY detected_at" in sql]
    assert oldest == ["SEARCH gaps USING INDEX ix_gaps_status_detected (status=?)"], oldest
    (repaired,) = [lines for sql, lines in plans.items() if "repaired_at >=" in sql]
    assert "ix_gaps_status_repaired (status=? AND repaired_at>?)" in repaired[0], repaired
    conn.close()
