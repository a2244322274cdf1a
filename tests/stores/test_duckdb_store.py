"""DuckDBStore against real DuckDB files: upsert semantics, schema, spans, the gap finder's
edge cases and a cross-check against a plain Python reference, and cross-process locking."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from candlekeep.core.errors import StoreError
from candlekeep.core.schema import CANDLE_SCHEMA, GAP_SCHEMA, candles_from_columns
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS, parse_timeframe
from candlekeep.stores import duckdb_store
from candlekeep.stores.duckdb_store import DuckDBStore
from candlekeep.stores.prepare import prepare_candles

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS  # 2023-11-14 00:00 UTC, a Tuesday
BTC = SeriesKey("binance", "BTC/USDT", "1m")
ETH = SeriesKey("binance", "ETH/USDT", "1m")

Gap = tuple[str, str, str, int, int]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore("test", tmp_path / "candles.duckdb")
    yield s
    s.close()


def candles(
    series: SeriesKey,
    ts_ms: Sequence[int],
    *,
    price: float = 100.0,
    ingested_at_ms: int = T0,
    trades: Sequence[int | None] | None = None,
) -> pa.Table:
    n = len(ts_ms)
    return candles_from_columns(
        series.source,
        series.symbol,
        series.timeframe,
        list(ts_ms),
        [price] * n,
        [price + 1] * n,
        [price - 1] * n,
        [price + 0.5] * n,
        [10.0] * n,
        ingested_at_ms,
        quote_volume=[price * 10.0] * n,
        trades=list(trades) if trades is not None else [7] * n,
    )


def grid(series: SeriesKey, start_ms: int, count: int) -> list[int]:
    tf = parse_timeframe(series.timeframe)
    first = tf.ceil(start_ms)
    return [first + i * tf.ms for i in range(count)]


def without(ts: Sequence[int], *indices: int) -> list[int]:
    drop = set(indices)
    return [t for i, t in enumerate(ts) if i not in drop]


def gaps(table: pa.Table) -> list[Gap]:
    assert table.schema.equals(GAP_SCHEMA)
    return [
        (r["source"], r["symbol"], r["timeframe"], _ms(r["gap_start"]), _ms(r["gap_end"]))
        for r in table.to_pylist()
    ]


def _ms(value: object) -> int:
    ts = pa.scalar(value, type=pa.timestamp("ms", tz="UTC"))
    return int(ts.cast(pa.int64()).as_py())


def gap(series: SeriesKey, start_ms: int, end_ms: int) -> Gap:
    return (series.source, series.symbol, series.timeframe, start_ms, end_ms)


def reference_gaps(
    stored: Mapping[SeriesKey, Iterable[int]], start_ms: int | None, end_ms: int | None
) -> list[Gap]:
    """The definition, spelled out: runs of missing grid points between consecutive stored
    candles, intersected with [start_ms, end_ms)."""
    out: list[Gap] = []
    for key in sorted(stored):
        tf = parse_timeframe(key.timeframe)
        ts = sorted(set(stored[key]))
        lo = tf.ceil(start_ms) if start_ms is not None else None
        hi = tf.ceil(end_ms) - tf.ms if end_ms is not None else None
        for a, b in itertools.pairwise(ts):
            if b - a <= tf.ms:
                continue
            g0, g1 = a + tf.ms, b - tf.ms
            if lo is not None:
                g0 = max(g0, lo)
            if hi is not None:
                g1 = min(g1, hi)
            if g0 <= g1:
                out.append(gap(key, g0, g1))
    return out


# --------------------------------------------------------------------------- upsert


def test_same_batch_twice_is_one_row_per_key(store: DuckDBStore) -> None:
    batch = candles(BTC, grid(BTC, T0, 50))
    assert store.upsert_candles(batch) == 50
    assert store.upsert_candles(batch) == 50
    assert store.read_candles(BTC).equals(batch)
    span = store.span(BTC)
    assert span is not None and span.count == 50


def test_changed_values_newest_wins_including_ingested_at(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 20)
    store.upsert_candles(candles(BTC, ts, price=100.0, ingested_at_ms=T0))
    newer = candles(BTC, ts[5:15], price=200.0, ingested_at_ms=T0 + HOUR_MS, trades=[None] * 10)
    assert store.upsert_candles(newer) == 10

    got = store.read_candles(BTC).to_pylist()
    assert [r["open"] for r in got] == [100.0] * 5 + [200.0] * 10 + [100.0] * 5
    assert [r["trades"] for r in got] == [7] * 5 + [None] * 10 + [7] * 5
    assert {_ms(r["ingested_at"]) for r in got[5:15]} == {T0 + HOUR_MS}
    assert len(got) == 20


def test_duplicate_keys_inside_one_batch_last_row_wins(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 5)
    first = candles(BTC, ts, price=1.0)
    second = candles(BTC, [ts[3], ts[1]], price=2.0)
    third = candles(BTC, [ts[1]], price=3.0)
    batch = pa.concat_tables([first, second, third])  # unsorted, duplicates far apart

    assert store.upsert_candles(batch) == 5
    got = store.read_candles(BTC)
    assert got.column("open").to_pylist() == [1.0, 3.0, 1.0, 2.0, 1.0]
    assert [_ms(v) for v in got.column("ts").to_pylist()] == ts


def test_series_in_several_pieces_like_a_buffer_flush(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 30)
    pieces = [
        candles(BTC, ts[0:10], price=1.0),
        candles(ETH, ts[0:10], price=1.0),
        candles(BTC, ts[10:20], price=1.0),  # same series again, later: no duplicate
        candles(ETH, ts[10:20], price=1.0),
    ]
    assert store.upsert_candles(pa.concat_tables(pieces)) == 40
    refetch = [candles(BTC, ts[15:25], price=2.0), candles(BTC, ts[18:22], price=3.0)]
    # the second piece overlaps the first: rows of the later piece win
    assert store.upsert_candles(pa.concat_tables(refetch)) == 10
    got = store.read_candles(BTC).column("open").to_pylist()
    assert got == [1.0] * 15 + [2.0] * 3 + [3.0] * 4 + [2.0] * 3
    assert store.read_candles(ETH).num_rows == 20


def test_mixed_series_in_one_batch(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 10)
    hourly = SeriesKey("binance", "BTC/USDT", "1h")
    other_source = SeriesKey("binance-testnet", "BTC/USDT", "1m")
    parts = []
    for i in range(10):  # rows interleaved across series
        parts.append(candles(BTC, [ts[i]], price=1.0))
        parts.append(candles(ETH, [ts[i]], price=2.0))
        parts.append(candles(other_source, [ts[i]], price=3.0))
    parts.append(candles(hourly, grid(hourly, T0, 3), price=4.0))
    assert store.upsert_candles(pa.concat_tables(parts)) == 33

    assert store.read_candles(ETH).column("open").to_pylist() == [2.0] * 10
    assert store.read_candles(other_source).column("open").to_pylist() == [3.0] * 10
    assert store.read_candles(hourly).num_rows == 3
    # the same keys again, in one interleaved batch: still one row each
    assert store.upsert_candles(pa.concat_tables(parts)) == 33
    assert sum(s.count for s in store.spans()) == 33


def test_rows_alternating_between_series(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 15_000)
    btc, eth = candles(BTC, ts, price=1.0), candles(ETH, ts, price=2.0)
    rows = pa.concat_tables([btc, eth]).take(
        pa.array([i // 2 + (i % 2) * len(ts) for i in range(2 * len(ts))])
    )  # BTC, ETH, BTC, ETH, ...: too many runs to check one by one
    assert store.upsert_candles(rows) == 30_000
    assert store.read_candles(BTC).equals(btc)
    assert store.read_candles(ETH).equals(eth)
    assert gaps(store.find_gaps()) == []


def test_round_trip_keeps_schema_and_values_exactly(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 3)
    batch = candles(BTC, ts, trades=[1, None, 3])
    store.upsert_candles(batch.cast(batch.schema))  # plain string columns, same values
    got = store.read_candles(BTC)
    assert got.schema.equals(CANDLE_SCHEMA, check_metadata=True)
    assert got.equals(batch)


def test_read_candles_clips_half_open_and_orders(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, list(reversed(ts))))
    got = store.read_candles(BTC, ts[2], ts[5])
    assert [_ms(v) for v in got.column("ts").to_pylist()] == ts[2:5]


def test_off_grid_or_unknown_timeframe_is_rejected(store: DuckDBStore) -> None:
    with pytest.raises(StoreError, match="off the 1m grid"):
        store.upsert_candles(candles(BTC, [T0, T0 + 30_000]))
    with pytest.raises(StoreError, match="unknown timeframe"):
        store.upsert_candles(candles(SeriesKey("binance", "BTC/USDT", "7m"), [T0]))
    with pytest.raises(StoreError, match="off the 1m grid, first binance:BTC/USDT"):
        store.upsert_candles(candles(BTC, [T0 + MINUTE_MS, T0, T0 + 90_000]))  # unsorted
    monday = T0 - DAY_MS  # the weekly grid opens on Mondays
    with pytest.raises(StoreError, match="off the 1w grid"):
        store.upsert_candles(candles(SeriesKey("binance", "BTC/USDT", "1w"), [T0]))
    store.upsert_candles(candles(SeriesKey("binance", "BTC/USDT", "1w"), [monday]))


def test_failed_upsert_leaves_old_state(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, ts, price=1.0))

    def append_then_fail(cur: duckdb.DuckDBPyConnection) -> None:
        raise RuntimeError("crash after the delete, before the append")

    monkeypatch.setattr(duckdb_store, "_append", append_then_fail)
    with pytest.raises(RuntimeError):
        store.upsert_candles(candles(BTC, ts, price=2.0))
    monkeypatch.undo()
    assert store.read_candles(BTC).column("open").to_pylist() == [1.0] * 10


def test_process_killed_mid_upsert_leaves_old_state(tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    store = DuckDBStore("test", path)
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, ts, price=1.0))
    store.close()
    child = f"""
        import os
        from candlekeep.core.schema import candles_from_columns
        from candlekeep.stores import duckdb_store
        def die(cur):
            os._exit(3)  # no commit, no close: as if killed between delete and append
        duckdb_store._append = die
        s = duckdb_store.DuckDBStore("child", {str(path)!r})
        ts = {ts!r}
        n = len(ts)
        s.upsert_candles(candles_from_columns("binance", "BTC/USDT", "1m", ts,
            [2.0] * n, [2.0] * n, [2.0] * n, [2.0] * n, [2.0] * n, 0))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], check=False)
    assert done.returncode == 3
    assert store.read_candles(BTC).column("open").to_pylist() == [1.0] * 10


def test_empty_batch_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "never-written.duckdb"
    store = DuckDBStore("test", path)
    assert store.upsert_candles(CANDLE_SCHEMA.empty_table()) == 0
    assert store.spans() == []
    assert store.span(BTC) is None
    assert store.latest(BTC) is None
    assert store.read_candles(BTC).schema.equals(CANDLE_SCHEMA)
    assert store.find_gaps().num_rows == 0
    assert not path.exists()  # reading never creates the file


# --------------------------------------------------------------------------- spans


def test_spans_all_by_source_and_one(store: DuckDBStore) -> None:
    testnet = SeriesKey("testnet", "BTC/USDT", "1m")
    store.upsert_candles(candles(BTC, without(grid(BTC, T0, 10), 4)))
    store.upsert_candles(candles(ETH, grid(ETH, T0 + HOUR_MS, 3)))
    store.upsert_candles(candles(testnet, grid(testnet, T0, 1)))

    spans = {s.series: (s.first_ms, s.last_ms, s.count) for s in store.spans()}
    assert spans == {
        BTC: (T0, T0 + 9 * MINUTE_MS, 9),
        ETH: (T0 + HOUR_MS, T0 + HOUR_MS + 2 * MINUTE_MS, 3),
        testnet: (T0, T0, 1),
    }
    assert [s.series for s in store.spans(source="binance")] == [BTC, ETH]
    assert [s.series for s in store.spans(series=ETH)] == [ETH]
    assert store.latest(BTC) == T0 + 9 * MINUTE_MS
    assert store.span(SeriesKey("binance", "XRP/USDT", "1m")) is None


# --------------------------------------------------------------------------- gaps


def test_no_gaps(store: DuckDBStore) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 1000)))
    assert gaps(store.find_gaps()) == []
    assert gaps(store.find_gaps(BTC, T0 + 5, T0 + 500 * MINUTE_MS)) == []


def test_one_missing_candle(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 1000)
    store.upsert_candles(candles(BTC, without(ts, 500)))
    assert gaps(store.find_gaps()) == [gap(BTC, ts[500], ts[500])]


@pytest.mark.parametrize("missing", [0, 1, 2, 254, 255, 256, 257, 511, 512])
def test_one_missing_candle_anywhere_in_a_bucket(store: DuckDBStore, missing: int) -> None:
    start = T0 // (256 * MINUTE_MS) * (256 * MINUTE_MS) - MINUTE_MS  # straddle bucket edges
    ts = grid(BTC, start, 700)
    store.upsert_candles(candles(BTC, without(ts, missing + 1)))
    assert gaps(store.find_gaps()) == [gap(BTC, ts[missing + 1], ts[missing + 1])]


def test_first_and_last_candle_of_the_clip_range_missing(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, without(ts, 10, 11, 12, 50, 60, 61)))
    # window starts on the 2nd of three missing, ends just after the 1st of two missing
    found = gaps(store.find_gaps(BTC, ts[11], ts[61]))
    assert found == [gap(BTC, ts[11], ts[12]), gap(BTC, ts[50], ts[50]), gap(BTC, ts[60], ts[60])]
    # window exactly the missing candle: it is reported although no row lies in the window
    assert gaps(store.find_gaps(BTC, ts[50], ts[51])) == [gap(BTC, ts[50], ts[50])]
    # off-grid window edges round inwards to the grid
    assert gaps(store.find_gaps(BTC, ts[10] + 1, ts[12] + 1)) == [gap(BTC, ts[11], ts[12])]


def test_window_inside_a_long_gap_and_outside_the_span(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 10_000)
    store.upsert_candles(candles(BTC, ts[:100] + ts[9_000:]))
    assert gaps(store.find_gaps(BTC, ts[2_000], ts[3_000])) == [gap(BTC, ts[2_000], ts[2_999])]
    # before the first stored candle is not a gap (that is backfill's business)
    assert gaps(store.find_gaps(BTC, T0 - DAY_MS, ts[50])) == []
    assert gaps(store.find_gaps(BTC, ts[-1] + MINUTE_MS, ts[-1] + DAY_MS)) == []
    assert gaps(store.find_gaps(BTC, ts[5], ts[5])) == []


def test_adjacent_gaps_separated_by_one_candle(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 300)
    store.upsert_candles(candles(BTC, without(ts, 100, 102, 103, 105)))
    assert gaps(store.find_gaps()) == [
        gap(BTC, ts[100], ts[100]),
        gap(BTC, ts[102], ts[103]),
        gap(BTC, ts[105], ts[105]),
    ]


def test_long_gap_across_many_buckets(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 20_000)
    store.upsert_candles(candles(BTC, ts[:10] + ts[15_000:15_001] + ts[19_990:]))
    assert gaps(store.find_gaps()) == [
        gap(BTC, ts[10], ts[14_999]),
        gap(BTC, ts[15_001], ts[19_989]),
    ]


def test_series_with_different_timeframes_in_one_table(store: DuckDBStore) -> None:
    h1 = SeriesKey("binance", "BTC/USDT", "1h")
    m5 = SeriesKey("bybit", "BTC/USDT", "5m")
    m1 = grid(BTC, T0, 500)
    hours = grid(h1, T0, 500)
    fives = grid(m5, T0, 500)
    store.upsert_candles(candles(BTC, without(m1, 7)))
    store.upsert_candles(candles(h1, without(hours, 3, 4, 300)))
    store.upsert_candles(candles(m5, without(fives, 499 - 1)))
    # ordered by series (source, symbol, timeframe as strings: "1h" < "1m"), then start
    assert gaps(store.find_gaps()) == [
        gap(h1, hours[3], hours[4]),
        gap(h1, hours[300], hours[300]),
        gap(BTC, m1[7], m1[7]),
        gap(m5, fives[498], fives[498]),
    ]
    assert gaps(store.find_gaps(h1)) == [
        gap(h1, hours[3], hours[4]),
        gap(h1, hours[300], hours[300]),
    ]


def test_coarse_timeframes_daily_and_weekly_on_mondays(store: DuckDBStore) -> None:
    d1 = SeriesKey("binance", "BTC/USDT", "1d")
    w1 = SeriesKey("binance", "BTC/USDT", "1w")
    days = grid(d1, T0, 400)
    weeks = grid(w1, T0, 300)
    assert parse_timeframe("1w").on_grid(weeks[0]) and weeks[0] % WEEK_MS != 0
    store.upsert_candles(candles(d1, without(days, 1, 2, 399 - 1)))
    store.upsert_candles(candles(w1, without(weeks, 100, 257, 258, 259)))
    assert gaps(store.find_gaps()) == [
        gap(d1, days[1], days[2]),
        gap(d1, days[398], days[398]),
        gap(w1, weeks[100], weeks[100]),
        gap(w1, weeks[257], weeks[259]),
    ]
    # a weekly window given in days rounds to Mondays
    assert gaps(store.find_gaps(w1, weeks[258] - 3 * DAY_MS, weeks[259] + DAY_MS)) == [
        gap(w1, weeks[258], weeks[259])
    ]


def test_series_filter(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, without(ts, 10)))
    store.upsert_candles(candles(ETH, without(ts, 20)))
    assert gaps(store.find_gaps(ETH)) == [gap(ETH, ts[20], ts[20])]
    assert gaps(store.find_gaps(SeriesKey("binance", "XRP/USDT", "1m"))) == []
    assert gaps(store.find_gaps(SeriesKey("binance", "BTC/USDT", "7m"))) == []


def test_clipping_all_series(store: DuckDBStore) -> None:
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, without(ts, 10, 11, 12, 13, 90)))
    store.upsert_candles(candles(ETH, without(ts, 40, 41)))
    assert gaps(store.find_gaps(None, ts[12], ts[41])) == [
        gap(BTC, ts[12], ts[13]),
        gap(ETH, ts[40], ts[40]),
    ]
    assert gaps(store.find_gaps(None, start_ms=ts[41])) == [
        gap(BTC, ts[90], ts[90]),
        gap(ETH, ts[41], ts[41]),
    ]
    assert gaps(store.find_gaps(None, end_ms=ts[11])) == [gap(BTC, ts[10], ts[10])]


def test_patterns_the_solver_cannot_settle_are_read_back_exactly(store: DuckDBStore) -> None:
    # several separate holes in one bucket: more than the targeted-read limit of them
    ts = grid(BTC, T0 // (256 * MINUTE_MS) * (256 * MINUTE_MS), 256 * 50)
    drop = [b * 256 + k for b in range(50) for k in (3, 5, 6, 9, 100, 101, 102, 200)]
    store.upsert_candles(candles(BTC, without(ts, *drop)))
    stored = {BTC: without(ts, *drop)}
    assert gaps(store.find_gaps()) == reference_gaps(stored, None, None)
    assert gaps(store.find_gaps(BTC, ts[700], ts[9000])) == reference_gaps(
        stored, ts[700], ts[9000]
    )


@pytest.mark.parametrize("seed", range(12))
def test_gaps_match_a_python_reference_on_random_data(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = DuckDBStore("test", tmp_path / "random.duckdb")
    stored: dict[SeriesKey, list[int]] = {}
    for n in range(rng.randint(1, 4)):
        tf_name = rng.choice(["1m", "3m", "15m", "1h", "4h", "1d", "1w"])
        key = SeriesKey(rng.choice(["binance", "okx"]), f"S{n}/USDT", tf_name)
        if key in stored:
            continue
        tf = parse_timeframe(tf_name)
        count = rng.randint(1, 3000)
        ts = grid(key, T0 - rng.randint(0, 2000) * tf.ms, count)
        keep = _random_holes(rng, count)
        stored[key] = [t for t, k in zip(ts, keep, strict=True) if k]
        if stored[key]:
            store.upsert_candles(candles(key, rng.sample(stored[key], len(stored[key]))))
        else:
            del stored[key]
    assert gaps(store.find_gaps()) == reference_gaps(stored, None, None)
    for key in stored:
        assert gaps(store.find_gaps(key)) == reference_gaps({key: stored[key]}, None, None)
    for _ in range(5):
        a = T0 + rng.randint(-3000, 3000) * rng.choice([1, 7, 60_000, 3_600_000])
        b = a + rng.randint(0, 3000) * rng.choice([60_000, 3_600_000, DAY_MS])
        assert gaps(store.find_gaps(None, a, b)) == reference_gaps(stored, a, b)
        key = rng.choice(sorted(stored))
        assert gaps(store.find_gaps(key, a, None)) == reference_gaps({key: stored[key]}, a, None)
    store.close()


def _random_holes(rng: random.Random, count: int) -> list[bool]:
    """Holes in several styles: sparse singles, runs, dense clusters, long outages."""
    keep = [True] * count
    style = rng.choice(["singles", "runs", "dense", "mixed"])
    density = {"singles": 0.003, "runs": 0.002, "dense": 0.2, "mixed": 0.01}[style]
    i = 0
    while i < count:
        if rng.random() < density:
            length = 1 if style == "singles" else rng.choice([1, 1, 2, 3, 5, 40, 300])
            for j in range(i, min(count, i + length)):
                keep[j] = False
            i += length
        i += 1
    return keep


# --------------------------------------------------------------------------- concurrency


def test_threads_writing_and_reading_one_file(tmp_path: Path) -> None:
    """Jobs call the store from worker threads; reads and writes interleave (and switch the
    shared instance between read-only and read-write) without errors or lost rows."""
    path = tmp_path / "threads.duckdb"
    stores = [DuckDBStore(f"s{i}", path) for i in range(3)]
    keys = [SeriesKey("binance", f"S{i}/USDT", "1m") for i in range(8)]
    ts = grid(BTC, T0, 200)

    def work(i: int) -> None:
        s = stores[i % len(stores)]
        key = keys[i % len(keys)]
        s.upsert_candles(candles(key, ts[(i * 7) % 100 : (i * 7) % 100 + 100], price=float(i)))
        s.spans()
        s.find_gaps(key)
        s.read_candles(key)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(48)))
    spans = stores[0].spans()
    assert [s.series for s in spans] == sorted(keys)
    for s in spans:
        assert s.count == len(set(range(s.first_ms, s.last_ms + 1, MINUTE_MS)))
    assert gaps(stores[0].find_gaps()) == []


def _child(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_CHILD_READER = """
    import sys
    import duckdb
    from candlekeep.stores import duckdb_store

    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except duckdb.Error as exc:
            if duckdb_store._is_lock_conflict(exc):
                print("locked", flush=True)  # the parent releases the file on this line
            raise

    duckdb_store.duckdb.connect = connect
    store = duckdb_store.DuckDBStore("child", {path!r}, lock_timeout_s={timeout})
    try:
        print("spans", [s.count for s in store.spans()], flush=True)
    except duckdb_store.StoreError as exc:
        print("error", exc, flush=True)
"""


def test_other_process_reading_while_this_one_writes_retries(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    store = DuckDBStore("parent", path)
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, ts[:50]))

    db = duckdb_store._database(path)
    with db.write_lock, db.cursor(write=True, timeout_s=10, keep_alive_s=0) as cur:
        assert cur is not None  # this process now holds the file, as during a write
        child = _child(_CHILD_READER.format(path=str(path), timeout=60.0))
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        duckdb_store._write(cur, prepare_candles(candles(BTC, ts[50:])))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines()[-1] == "spans [100]"


def test_gives_up_with_a_clear_error_when_the_file_stays_locked(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    store = DuckDBStore("parent", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    with db.cursor(write=True, timeout_s=10, keep_alive_s=0):
        child = _child(_CHILD_READER.format(path=str(path), timeout=0.2))
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    last = out.splitlines()[-1]
    assert last.startswith("error DuckDB file") and "in use by another process" in last


def test_keep_alive_reuses_the_instance_and_close_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "kept.duckdb"
    store = DuckDBStore("kept", path, keep_alive_s=3600)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    assert store.span(BTC) is not None  # served by the kept read-write instance
    store.close()
    child = _child(_CHILD_READER.format(path=str(path), timeout=0.0))
    out, err = child.communicate(timeout=60)
    assert out.splitlines()[-1] == "spans [5]", err


def test_a_writer_waits_for_readers_of_this_process(tmp_path: Path) -> None:
    path = tmp_path / "modes.duckdb"
    store = DuckDBStore("modes", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    wrote = threading.Event()

    def write() -> None:
        store.upsert_candles(candles(BTC, grid(BTC, T0 + 5 * MINUTE_MS, 5)))
        wrote.set()

    with db.cursor(write=False, timeout_s=10, keep_alive_s=0) as cur:
        assert cur is not None  # a read-only instance is open in this process
        writer = threading.Thread(target=write)
        writer.start()
    writer.join(timeout=60)
    assert wrote.is_set()
    span = store.span(BTC)
    assert span is not None and span.count == 10
