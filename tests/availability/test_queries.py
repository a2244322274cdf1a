"""Availability queries over real stores (DuckDB, and PostgreSQL through the same tests),
seeded through ``Store.upsert(AVAILABILITY, ...)`` as the tracker writes."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlekeep.availability import queries as q
from candlekeep.availability.dataset import AVAILABILITY, ProbeStatus
from candlekeep.queries.encode import plain
from candlekeep.stores.base import Store
from candlekeep.stores.duckdb_store import DuckDBStore
from candlekeep.stores.postgres_store import PostgresStore
from tests.availability.seed import PROBED_AT, day, probe_rows, seed, table


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "duckdb":
        s = DuckDBStore("main", tmp_path / "a.duckdb")
    else:
        url = request.getfixturevalue("pg_session_url")
        s = PostgresStore("main", url, f"av_{secrets.token_hex(4)}")
    seed(s)
    yield s
    s.close()


def test_snapshot_lists_each_symbol_with_its_status(store: Store) -> None:
    snap = q.snapshot(store, day(10))
    assert snap.counts == q.StatusCounts(available=4, missing=1, error=1)
    by = {s.symbol: s for s in snap.symbols}
    assert [s.symbol for s in snap.symbols] == sorted(by)
    assert by["ETHUSDT"].status is ProbeStatus.ERROR
    assert by["ETHUSDT"].error == "HTTP 503 after 3 attempts"
    assert by["NEWUSDT"].status is ProbeStatus.MISSING and by["NEWUSDT"].size is None
    assert by["BTCUSDT"].size == 61_009 and by["BTCUSDT"].probed_at_ms == PROBED_AT
    assert q.snapshot(store, day(10), "spot").counts.total == 0  # spot stops on the 5th


def test_timeline_runs_of_one_status_and_unprobed_dates(store: Store) -> None:
    new = q.timeline(store, "NEWUSDT")
    assert [(r.status, r.first, r.last, r.days) for r in new.runs] == [
        ("missing", day(1), day(14), 14), ("available", day(15), day(20), 6)]
    assert (new.first_available, new.last_available) == (day(15), day(20))
    assert new.counts == q.StatusCounts(available=6, missing=14)
    gap = q.timeline(store, "GAPUSDT")
    assert [(r.status, r.days) for r in gap.runs] == [
        ("available", 5), (q.UNPROBED, 2), ("available", 13)]
    assert (gap.runs[1].first, gap.runs[1].last) == (day(6), day(7))
    eth = q.timeline(store, "ETHUSDT")
    assert [r.status for r in eth.runs] == ["available", "error", "available"]


def test_range_counts_per_date_with_zeros_for_unprobed_dates(store: Store) -> None:
    r = q.date_range(store, dt.date(2023, 12, 31), day(2))
    assert [(d.date, d.available, d.missing, d.error) for d in r.days] == [
        (dt.date(2023, 12, 31), 0, 0, 0), (day(1), 5, 1, 0), (day(2), 5, 1, 0)]
    mid = q.date_range(store, day(6), day(10))
    assert [d.total for d in mid.days] == [5, 5, 6, 6, 6]  # GAPUSDT not probed 6th, 7th
    assert mid.totals == q.StatusCounts(available=22, missing=5, error=1)


def test_new_listings_on_a_date_or_in_the_days_ending_on_it(store: Store) -> None:
    assert [s.symbol for s in q.new_listings(store, day(15)).symbols] == ["NEWUSDT"]
    assert q.new_listings(store, day(16), days=1).symbols == []
    week = q.new_listings(store, day(16), days=3)
    assert (week.start, week.end) == (day(14), day(16))
    assert plain(week.symbols) == [{"symbol": "NEWUSDT", "first_available": day(15)}]
    # Available on the first probed date: listed at some unknown time before, not new.
    assert q.new_listings(store, day(1)).symbols == []


def test_delistings_outside_the_publication_buffer(store: Store) -> None:
    d = q.delistings(store)
    assert (d.newest_probed, d.settled) == (day(20), day(17))
    assert [(s.symbol, s.last_available, s.days_since) for s in d.symbols] == [
        ("OLDUSDT", day(10), 10)]  # LATEUSDT's last file (18th) is inside the buffer
    tight = q.delistings(store, buffer_days=1)
    assert [s.symbol for s in tight.symbols] == ["LATEUSDT", "OLDUSDT"]


def test_summary_per_market_and_after_a_re_probe(store: Store) -> None:
    s = q.summary(store)
    assert [m.market for m in s.markets] == ["futures/um", "spot"]
    um = s.markets[0]
    assert (um.first_date, um.last_date, um.dates) == (day(1), day(20), 20)
    assert (um.symbols, um.symbols_ever_available) == (6, 6)
    assert (um.settled_date, um.available_on_settled_date) == (day(17), 5)
    assert um.counts == q.StatusCounts(available=91, missing=26, error=1)
    assert um.errors_outstanding == 1
    assert plain(um.recent_errors) == [
        {"date": day(10), "symbol": "ETHUSDT", "error": "HTTP 503 after 3 attempts"}]
    assert um.newest_probe_ms == PROBED_AT and um.newest_probe_utc == "2024-01-21T00:00:00.000Z"
    # The next run re-probes the 10th and finds ETHUSDT's file: nothing is outstanding, and
    # the volumes written by the 1d pass are still there.
    fixed = [r for r in probe_rows() if r["date"] == day(10) and r["symbol"] == "ETHUSDT"]
    fixed[0].update(status="available", available=True, size=60_000, error=None,
                    probed_at=PROBED_AT + 86_400_000)
    store.upsert(AVAILABILITY, table(fixed))
    again = q.summary(store, "futures/um")
    assert [m.market for m in again.markets] == ["futures/um"]
    assert again.markets[0].errors_outstanding == 0 and again.markets[0].recent_errors == []
    assert again.markets[0].newest_probe_ms == PROBED_AT + 86_400_000
    btc = store.read(AVAILABILITY, where={"market": "futures/um", "symbol": "BTCUSDT"})
    assert btc.column("volume").to_pylist()[:2] == [1000.0, 1001.0]


def test_clear_errors_for_no_data_an_unknown_market_or_symbol(tmp_path: Path) -> None:
    empty = DuckDBStore("main", tmp_path / "empty.duckdb")
    with pytest.raises(q.NoAvailabilityData, match="run `candlekeep availability update` "
                       "first"):
        q.summary(empty)
    with pytest.raises(q.NoAvailabilityData, match="store main holds no availability data "
                       "for market 'futures/um'"):
        q.snapshot(empty, day(1))
    seed(empty)
    with pytest.raises(q.NoAvailabilityData, match=r"market 'futures/cm'; markets with data: "
                       r"futures/um, spot"):
        q.delistings(empty, "futures/cm")
    with pytest.raises(q.NoAvailabilityData, match=r"no availability rows for symbol "
                       r"'BTC/USDT'.*exchange ids such as BTCUSDT"):
        q.timeline(empty, "BTC/USDT")
