from pathlib import Path

import pyarrow as pa

from candlekeep.core.schema import GAP_SCHEMA, TS_TYPE
from candlekeep.core.series import SeriesKey
from candlekeep.state import StateDB

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


def test_tick_claimed_once(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path}/s.db")
    assert db.start_run("ingest", 1000, "a", 1000) is not None
    assert db.start_run("ingest", 1000, "b", 1001) is None
    assert db.start_run("ingest", 1000, "a", 1002, attempt=2) is not None
    assert [r.attempt for r in db.list_runs("ingest")] == [2, 1]


def test_repaired_gap_found_again_reopens(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path}/s.db")
    db.record_gap_scan([S], gaps((10 * M, 12 * M)), now_ms=1)
    db.record_gap_scan([S], gaps(), now_ms=2)
    assert [g.status for g in db.list_gaps()] == ["repaired"]
    counts = db.record_gap_scan([S], gaps((10 * M, 11 * M)), now_ms=3)
    (g,) = db.list_gaps()
    assert counts["resized"] == 1 and g.status == "open" and g.gap_end == 11 * M
