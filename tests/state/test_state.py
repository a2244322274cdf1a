from pathlib import Path

import pyarrow as pa

from candlekeep.core.schema import GAP_SCHEMA, TS_TYPE
from candlekeep.core.series import SeriesKey
from candlekeep.state.db import StateDB

S = SeriesKey("sim", "BTC/USDT", "1m")
M = 60_000


def gaps(*ranges: tuple[int, int], series: SeriesKey = S) -> pa.Table:
    n = len(ranges)
    return pa.table({
        "source": [series.source] * n, "symbol": [series.symbol] * n,
        "timeframe": [series.timeframe] * n,
        "gap_start": pa.array([a for a, _ in ranges], pa.int64()).cast(TS_TYPE),
        "gap_end": pa.array([b for _, b in ranges], pa.int64()).cast(TS_TYPE),
    }, schema=GAP_SCHEMA)


def test_checkpoints_roundtrip(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path}/s.db")
    assert db.get_checkpoint("backfill", S) is None
    db.set_checkpoint("backfill", S, 10 * M, 1)
    db.set_checkpoint("backfill", S, 20 * M, 2)
    assert db.get_checkpoint("backfill", S) == 20 * M
    db.clear_checkpoints("backfill", [S])
    assert db.get_checkpoint("backfill", S) is None


def test_gap_scan_reconciliation(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path}/s.db")
    counts = db.record_gap_scan([S], gaps((10 * M, 12 * M), (50 * M, 50 * M)), now_ms=1)
    assert counts["new"] == 2
    _first, second = db.list_gaps()
    db.update_gap(second.id, status="confirmed_empty", empty_attempts=2)
    # Next scan: the first gap was filled by ingest, the confirmed one is still there.
    counts = db.record_gap_scan([S], gaps((50 * M, 50 * M)), now_ms=2)
    assert counts == {"new": 0, "known": 1, "closed": 1, "resized": 0}
    by_start = {g.gap_start: g for g in db.list_gaps()}
    assert by_start[10 * M].status == "repaired" and by_start[10 * M].repaired_at == 2
    assert by_start[50 * M].status == "confirmed_empty"
    # A scan of another series leaves this one's gaps alone.
    other = SeriesKey("sim", "ETH/USDT", "1m")
    db.record_gap_scan([other], gaps(series=other), now_ms=3)
    assert db.gap_counts() == {"repaired": 1, "confirmed_empty": 1}


OLD_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, job VARCHAR(200) NOT NULL,
  scheduled_for BIGINT NOT NULL, attempt INTEGER NOT NULL, node VARCHAR(200) NOT NULL,
  "trigger" VARCHAR(20) NOT NULL, started_at BIGINT, finished_at BIGINT, heartbeat_at BIGINT,
  status VARCHAR(20) NOT NULL, rows_written BIGINT NOT NULL, requests BIGINT NOT NULL,
  error TEXT, CONSTRAINT uq_runs_tick_attempt UNIQUE (job, scheduled_for, attempt));
CREATE INDEX ix_runs_status ON runs (status);
CREATE TABLE scheduler_jobs (job VARCHAR(200) PRIMARY KEY, schedule VARCHAR(200),
  timezone VARCHAR(64), last_tick BIGINT NOT NULL, created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL, updated_by VARCHAR(200));
CREATE TABLE scheduler_nodes (node VARCHAR(200) PRIMARY KEY, host VARCHAR(255) NOT NULL,
  pid INTEGER NOT NULL, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL,
  stopped_at BIGINT, status VARCHAR(20) NOT NULL, lease_ms BIGINT NOT NULL,
  version VARCHAR(40));
INSERT INTO runs (job, scheduled_for, attempt, node, "trigger", started_at, heartbeat_at,
  status, rows_written, requests) VALUES ('j', 60000, 1, 'n1', 'schedule', 60000, 61000,
  'running', 0, 0);
INSERT INTO runs (job, scheduled_for, attempt, node, "trigger", started_at, finished_at,
  status, rows_written, requests) VALUES ('j', 0, 1, 'n1', 'schedule', 0, 5, 'success', 3, 1);
"""


def test_a_state_db_of_the_first_scheduler_is_upgraded_in_place(tmp_path: Path) -> None:
    """New columns and indexes are added, history kept, live runs given the old lease."""
    import sqlite3

    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    db = StateDB(f"sqlite:///{path}")
    live, done = sorted(db.list_runs(), key=lambda r: r.id)
    assert (live.status, done.status, done.rows_written) == ("running", "success", 3)
    with sqlite3.connect(path) as conn:
        lease, inst = conn.execute(
            "SELECT lease_until, instance FROM runs WHERE id = 1").fetchone()
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(runs)")}
        cols = {r[1] for r in conn.execute("PRAGMA table_info(scheduler_nodes)")}
    assert (lease, inst) == (61_000 + 15_000, None)
    assert {"ix_runs_scheduled", "ix_runs_finished", "ix_runs_job_started"} <= indexes
    assert {"instance", "lease_until", "skew_ms", "conflicts"} <= cols
    StateDB(f"sqlite:///{path}")  # a second open finds the version and does nothing


def test_repaired_gap_found_again_reopens(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path}/s.db")
    db.record_gap_scan([S], gaps((10 * M, 12 * M)), now_ms=1)
    db.record_gap_scan([S], gaps(), now_ms=2)
    assert [g.status for g in db.list_gaps()] == ["repaired"]
    counts = db.record_gap_scan([S], gaps((10 * M, 11 * M)), now_ms=3)
    (g,) = db.list_gaps()
    assert counts["resized"] == 1 and g.status == "open" and g.gap_end == 11 * M
