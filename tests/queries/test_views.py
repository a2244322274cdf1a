"""The read model's rules on a real state DB: coverage from series state and gaps, the gap
summary, paging, and how health judges what the probes found."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlekeep.config.models import Config
from candlekeep.core.series import SeriesKey
from candlekeep.jobs.runtime import series_plans
from candlekeep.queries.coverage import coverage
from candlekeep.queries.freshness import FreshnessView
from candlekeep.queries.gaps import gap_summary, gaps
from candlekeep.queries.health import Component, HealthStatus, ProbeView, health
from candlekeep.queries.jobs import NodeView, runs
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from candlekeep.state.ops_state import SeriesMark, note_written, reconcile
from candlekeep.state.reader import Reader
from candlekeep.state.statuses import FreshnessStatus

NOW = 1_780_000_020_000 // 60_000 * 60_000
MIN = 60_000
DAY = 86_400_000
BTC = SeriesKey("sim", "BTC/USDT", "1m")
ETH = SeriesKey("sim", "ETH/USDT", "1m")
CONFIG = Config.model_validate({
    "stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
    "sources": {"sim": {"type": "sim"}},
    "series": [{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1m"],
                "start": "2026-01-01"}],
    "jobs": [{"name": "ingest", "type": "ingest", "schedule": "* * * * *"}],
})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.dispose()


@pytest.fixture
def reader(db: StateDB) -> Iterator[Reader]:
    conn = sqlite3.connect(db.url.split(":///", 1)[1])
    yield Reader(conn, pyformat=False)
    conn.close()


def gap(series: SeriesKey, start: int, end: int, status: str, **extra: object) -> dict[
        str, object]:
    return {"source": series.source, "symbol": series.symbol, "timeframe": series.timeframe,
            "gap_start": start, "gap_end": end, "detected_at": extra.pop("detected", NOW),
            "repaired_at": extra.pop("repaired_at", None), "status": status, "attempts": 0,
            "empty_attempts": 0}


def test_coverage_counts_confirmed_empty_as_covered(db: StateDB, reader: Reader) -> None:
    first = NOW - 1000 * MIN
    # 1000 candles on the grid; 990 stored, 5 confirmed empty, 5 in an open gap
    reconcile(db.engine, "main", [(BTC, first, NOW - MIN, 990)], NOW, NOW)
    with db.engine.begin() as conn:
        conn.execute(t.gaps.insert(), [
            gap(BTC, first + 100 * MIN, first + 104 * MIN, "confirmed_empty"),
            gap(BTC, first + 200 * MIN, first + 204 * MIN, "open"),
            gap(BTC, first + 300 * MIN, first + 399 * MIN, "repaired", repaired_at=NOW)])
    btc, eth = coverage(reader, series_plans(CONFIG))
    assert (btc.expected, btc.stored, btc.missing) == (1000, 990, 10)
    assert (btc.confirmed_empty, btc.open_gaps, btc.coverage_pct) == (5, 1, 99.5)
    assert btc.stored_exact and btc.first_iso is not None
    assert (eth.stored, eth.expected, eth.coverage_pct, eth.first_ms) == (0, 0, 0.0, None)
    # a write after the reconciliation: the count becomes an upper bound
    note_written(db.engine, "main", [SeriesMark(BTC, NOW, NOW, 1)], NOW + MIN)
    (btc,) = coverage(reader, series_plans(CONFIG, symbol="BTC/USDT"))
    assert btc.stored == 991 and not btc.stored_exact and btc.expected == 1001


def test_gap_summary_and_paging(db: StateDB, reader: Reader) -> None:
    with db.engine.begin() as conn:
        conn.execute(t.gaps.insert(), [
            gap(BTC, NOW - 50 * MIN, NOW - 40 * MIN, "open", detected=NOW - 3 * DAY),
            gap(ETH, NOW - 50 * MIN, NOW - 49 * MIN, "open", detected=NOW - DAY),
            gap(BTC, NOW - 90 * MIN, NOW - 80 * MIN, "failed"),
            gap(BTC, NOW - 99 * MIN, NOW - 98 * MIN, "confirmed_empty"),
            gap(ETH, NOW - 30 * MIN, NOW - 29 * MIN, "repaired", repaired_at=NOW - 2 * DAY),
            gap(ETH, NOW - 20 * MIN, NOW - 19 * MIN, "repaired", repaired_at=NOW - 60_000)])
    s = gap_summary(reader, NOW)
    assert (s.open, s.failed, s.confirmed_empty, s.repaired_24h) == (2, 1, 1, 1)
    assert s.oldest_open is not None and s.oldest_open.series == str(BTC)
    assert s.oldest_open.candles == 11 and s.oldest_open_age_ms == 3 * DAY
    every = gaps(reader).items
    assert [g.series for g in every] == [str(BTC)] * 3 + [str(ETH)] * 3
    assert [g.gap_start for g in every[:3]] == sorted(g.gap_start for g in every[:3])
    page = gaps(reader, limit=4)
    assert page.next_offset == 4 and gaps(reader, limit=4, offset=4).next_offset is None
    assert gaps(reader, limit=4, offset=4).items == every[4:]
    assert [g.status for g in gaps(reader, status="open", symbol="ETH/USDT").items] == ["open"]


def test_runs_page_until_the_last(db: StateDB, reader: Reader) -> None:
    with db.engine.begin() as conn:
        conn.execute(t.runs.insert(), [
            {"job": "j", "scheduled_for": NOW - k * MIN, "attempt": 1, "node": "n",
             "trigger": "schedule", "status": "success", "started_at": NOW - k * MIN,
             "finished_at": NOW - k * MIN + 5, "rows_written": 0, "requests": 0}
            for k in range(5)])
    first = runs(reader, limit=2)
    assert [r.scheduled_for for r in first.items] == [NOW, NOW - MIN]
    assert first.next_offset == 2 and first.items[0].scheduled_utc == "2026-05-28T20:27:00.000Z"
    last = runs(reader, limit=2, offset=4)
    assert len(last.items) == 1 and last.next_offset is None
    assert runs(reader, since_ms=NOW - MIN).items[-1].scheduled_for == NOW - MIN


def probe(name: str, kind: Component, ok: bool = True, ms: float = 2.0) -> ProbeView:
    return ProbeView(name, kind, "x", ok, ms, None if ok else "refused")


def node(name: str, alive: bool, status: str = "running") -> NodeView:
    return NodeView(name, "h", 1, None, status, alive, NOW - DAY, NOW - 60_000, 60_000, None,
                    [], None)


def verdict(status: FreshnessStatus) -> FreshnessView:
    return FreshnessView("series", "main", str(BTC), status, NOW, None, 1, 10, 1, None, NOW,
                         NOW)


def test_health_is_the_worst_component() -> None:
    db_ok = probe("state_db", Component.STATE_DB)
    store = probe("main", Component.STORE)
    fine = health(CONFIG, db_ok, [store], [node("a", True)], [verdict(FreshnessStatus.OK)],
                  True, NOW)
    assert fine.status == HealthStatus.OK
    assert {(c.kind, c.name) for c in fine.components} == {
        (Component.STATE_DB, "state_db"), (Component.STORE, "main"),
        (Component.SCHEDULER, "scheduler"), (Component.NODE, "a"),
        (Component.SOURCE, "sim"), (Component.FRESHNESS, "freshness")}
    stale = health(CONFIG, db_ok, [store], [node("a", True), node("b", False)],
                   [verdict(FreshnessStatus.STALE)], True, NOW)
    assert stale.status == HealthStatus.DEGRADED
    bad = {c.name: c for c in stale.components if c.status != HealthStatus.OK}
    assert set(bad) == {"b", "freshness"} and "lease has lapsed" in bad["b"].detail
    stopped = health(CONFIG, db_ok, [store], [node("a", False, "stopped")], [], True, NOW)
    (sched,) = [c for c in stopped.components if c.kind == Component.SCHEDULER]
    assert sched.status == HealthStatus.DEGRADED and "no daemon" in sched.detail
    assert not [c for c in stopped.components if c.kind == Component.NODE]
    slow = health(CONFIG, db_ok, [probe("main", Component.STORE, ms=5000)], [], [], False,
                  NOW)
    assert slow.status == HealthStatus.DEGRADED
    down = health(CONFIG, probe("state_db", Component.STATE_DB, ok=False), [store], None,
                  None, True, NOW)
    assert down.status == HealthStatus.DOWN
    assert [c.name for c in down.components if c.status == HealthStatus.DOWN] == ["state_db"]
