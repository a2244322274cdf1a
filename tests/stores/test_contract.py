"""The store contract, run against every store type (duckdb, postgresql, clickhouse).

A new backend is done when this suite passes on it. Backend-specific behaviour (locking,
COPY encoding, merges) is tested beside each store.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS, parse_timeframe
from candlekeep.stores.base import Store
from tests.stores.candle_data import (
    BTC,
    ETH,
    T0,
    candles,
    gap,
    gaps,
    grid,
    ms_of,
    random_holes,
    reference_gaps,
    without,
)

# --------------------------------------------------------------------------- upsert


def test_same_batch_twice_is_one_row_per_key(store: Store) -> None:
    batch = candles(BTC, grid(BTC, T0, 50))
    assert store.upsert_candles(batch) == 50
    assert store.upsert_candles(batch) == 50
    assert store.read_candles(BTC).equals(batch)
    span = store.span(BTC)
    assert span is not None and span.count == 50


def test_changed_values_newest_wins_including_ingested_at(store: Store) -> None:
    ts = grid(BTC, T0, 20)
    store.upsert_candles(candles(BTC, ts, price=100.0, ingested_at_ms=T0))
    newer = candles(BTC, ts[5:15], price=200.0, ingested_at_ms=T0 + HOUR_MS, trades=[None] * 10)
    assert store.upsert_candles(newer) == 10

    got = store.read_candles(BTC).to_pylist()
    assert [r["open"] for r in got] == [100.0] * 5 + [200.0] * 10 + [100.0] * 5
    assert [r["trades"] for r in got] == [7] * 5 + [None] * 10 + [7] * 5
    assert {ms_of(r["ingested_at"]) for r in got[5:15]} == {T0 + HOUR_MS}
    assert len(got) == 20


def test_duplicate_keys_inside_one_batch_last_row_wins(store: Store) -> None:
    ts = grid(BTC, T0, 5)
    first = candles(BTC, ts, price=1.0)
    second = candles(BTC, [ts[3], ts[1]], price=2.0)
    third = candles(BTC, [ts[1]], price=3.0)
    batch = pa.concat_tables([first, second, third])  # unsorted, duplicates far apart

    assert store.upsert_candles(batch) == 5
    got = store.read_candles(BTC)
    assert got.column("open").to_pylist() == [1.0, 3.0, 1.0, 2.0, 1.0]
    assert [ms_of(v) for v in got.column("ts").to_pylist()] == ts


def test_series_in_several_pieces_like_a_buffer_flush(store: Store) -> None:
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


def test_mixed_series_in_one_batch(store: Store) -> None:
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


def test_rows_alternating_between_series(store: Store) -> None:
    ts = grid(BTC, T0, 15_000)
    btc, eth = candles(BTC, ts, price=1.0), candles(ETH, ts, price=2.0)
    rows = pa.concat_tables([btc, eth]).take(
        pa.array([i // 2 + (i % 2) * len(ts) for i in range(2 * len(ts))])
    )  # BTC, ETH, BTC, ETH, ...: too many runs to check one by one
    assert store.upsert_candles(rows) == 30_000
    assert store.read_candles(BTC).equals(btc)
    assert store.read_candles(ETH).equals(eth)
    assert gaps(store.find_gaps()) == []


def test_round_trip_keeps_schema_and_values_exactly(store: Store) -> None:
    ts = grid(BTC, T0, 3)
    batch = candles(BTC, ts, trades=[1, None, 3])
    store.upsert_candles(batch.cast(batch.schema))  # plain string columns, same values
    got = store.read_candles(BTC)
    assert got.schema.equals(CANDLE_SCHEMA, check_metadata=True)
    assert got.equals(batch)


def test_read_candles_clips_half_open_and_orders(store: Store) -> None:
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, list(reversed(ts))))
    got = store.read_candles(BTC, ts[2], ts[5])
    assert [ms_of(v) for v in got.column("ts").to_pylist()] == ts[2:5]


def test_off_grid_or_unknown_timeframe_is_rejected(store: Store) -> None:
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


# --------------------------------------------------------------------------- spans


def test_spans_all_by_source_and_one(store: Store) -> None:
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


def test_no_gaps(store: Store) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 1000)))
    assert gaps(store.find_gaps()) == []
    assert gaps(store.find_gaps(BTC, T0 + 5, T0 + 500 * MINUTE_MS)) == []


def test_one_missing_candle(store: Store) -> None:
    ts = grid(BTC, T0, 1000)
    store.upsert_candles(candles(BTC, without(ts, 500)))
    assert gaps(store.find_gaps()) == [gap(BTC, ts[500], ts[500])]


@pytest.mark.parametrize("missing", [0, 1, 2, 254, 255, 256, 257, 511, 512])
def test_one_missing_candle_anywhere_in_a_bucket(store: Store, missing: int) -> None:
    start = T0 // (256 * MINUTE_MS) * (256 * MINUTE_MS) - MINUTE_MS  # straddle bucket edges
    ts = grid(BTC, start, 700)
    store.upsert_candles(candles(BTC, without(ts, missing + 1)))
    assert gaps(store.find_gaps()) == [gap(BTC, ts[missing + 1], ts[missing + 1])]


def test_first_and_last_candle_of_the_clip_range_missing(store: Store) -> None:
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, without(ts, 10, 11, 12, 50, 60, 61)))
    # window starts on the 2nd of three missing, ends just after the 1st of two missing
    found = gaps(store.find_gaps(BTC, ts[11], ts[61]))
    assert found == [gap(BTC, ts[11], ts[12]), gap(BTC, ts[50], ts[50]), gap(BTC, ts[60], ts[60])]
    # window exactly the missing candle: it is reported although no row lies in the window
    assert gaps(store.find_gaps(BTC, ts[50], ts[51])) == [gap(BTC, ts[50], ts[50])]
    # off-grid window edges round inwards to the grid
    assert gaps(store.find_gaps(BTC, ts[10] + 1, ts[12] + 1)) == [gap(BTC, ts[11], ts[12])]


def test_window_inside_a_long_gap_and_outside_the_span(store: Store) -> None:
    ts = grid(BTC, T0, 10_000)
    store.upsert_candles(candles(BTC, ts[:100] + ts[9_000:]))
    assert gaps(store.find_gaps(BTC, ts[2_000], ts[3_000])) == [gap(BTC, ts[2_000], ts[2_999])]
    # before the first stored candle is not a gap (that is backfill's business)
    assert gaps(store.find_gaps(BTC, T0 - DAY_MS, ts[50])) == []
    assert gaps(store.find_gaps(BTC, ts[-1] + MINUTE_MS, ts[-1] + DAY_MS)) == []
    assert gaps(store.find_gaps(BTC, ts[5], ts[5])) == []


def test_adjacent_gaps_separated_by_one_candle(store: Store) -> None:
    ts = grid(BTC, T0, 300)
    store.upsert_candles(candles(BTC, without(ts, 100, 102, 103, 105)))
    assert gaps(store.find_gaps()) == [
        gap(BTC, ts[100], ts[100]),
        gap(BTC, ts[102], ts[103]),
        gap(BTC, ts[105], ts[105]),
    ]


def test_long_gap_across_many_buckets(store: Store) -> None:
    ts = grid(BTC, T0, 20_000)
    store.upsert_candles(candles(BTC, ts[:10] + ts[15_000:15_001] + ts[19_990:]))
    assert gaps(store.find_gaps()) == [
        gap(BTC, ts[10], ts[14_999]),
        gap(BTC, ts[15_001], ts[19_989]),
    ]


def test_series_with_different_timeframes_in_one_table(store: Store) -> None:
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


def test_coarse_timeframes_daily_and_weekly_on_mondays(store: Store) -> None:
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


def test_series_filter(store: Store) -> None:
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, without(ts, 10)))
    store.upsert_candles(candles(ETH, without(ts, 20)))
    assert gaps(store.find_gaps(ETH)) == [gap(ETH, ts[20], ts[20])]
    assert gaps(store.find_gaps(SeriesKey("binance", "XRP/USDT", "1m"))) == []
    assert gaps(store.find_gaps(SeriesKey("binance", "BTC/USDT", "7m"))) == []


def test_clipping_all_series(store: Store) -> None:
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


def test_patterns_the_solver_cannot_settle_are_read_back_exactly(store: Store) -> None:
    # several separate holes in one bucket: more than the targeted-read limit of them
    ts = grid(BTC, T0 // (256 * MINUTE_MS) * (256 * MINUTE_MS), 256 * 50)
    drop = [b * 256 + k for b in range(50) for k in (3, 5, 6, 9, 100, 101, 102, 200)]
    store.upsert_candles(candles(BTC, without(ts, *drop)))
    stored = {BTC: without(ts, *drop)}
    assert gaps(store.find_gaps()) == reference_gaps(stored, None, None)
    assert gaps(store.find_gaps(BTC, ts[700], ts[9000])) == reference_gaps(
        stored, ts[700], ts[9000]
    )


@pytest.mark.parametrize("seed", range(8))
def test_gaps_match_a_python_reference_on_random_data(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    stored: dict[SeriesKey, list[int]] = {}
    for n in range(rng.randint(1, 4)):
        tf_name = rng.choice(["1m", "3m", "15m", "1h", "4h", "1d", "1w"])
        key = SeriesKey(rng.choice(["binance", "okx"]), f"S{n}/USDT", tf_name)
        if key in stored:
            continue
        tf = parse_timeframe(tf_name)
        count = rng.randint(1, 3000)
        ts = grid(key, T0 - rng.randint(0, 2000) * tf.ms, count)
        keep = random_holes(rng, count)
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


# --------------------------------------------------------------------------- datasets

TS = pa.timestamp("ms", tz="UTC")

FILLS = Dataset(
    "ck_test_fills",
    pa.schema([
        pa.field("account", pa.string(), nullable=False),
        pa.field("fill_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64()),
        pa.field("fee", pa.float64()),
        pa.field("note", pa.string()),
        pa.field("is_maker", pa.bool_()),
        pa.field("seq", pa.int64()),
        pa.field("updated_at", TS, nullable=False),
    ]),
    key=("account", "fill_id"),
    version="updated_at",
    time="ts",
)

MARKS = Dataset(  # no version column: the later write must still win
    "ck_test_marks",
    pa.schema([
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("mark", pa.float64()),
        pa.field("label", pa.string()),
    ]),
    key=("symbol", "ts"),
    time="ts",
)


def fills(ids: list[int], *, price: float = 1.0, updated: int = T0, account: str = "a1",
          note: str | None = "n") -> pa.Table:
    n = len(ids)
    return pa.table({
        "account": [account] * n,
        "fill_id": [f"f{i:05d}" for i in ids],
        "ts": pa.array([T0 + i * MINUTE_MS for i in ids], pa.int64()).cast(TS),
        "price": [price] * n,
        "qty": [float(i) for i in ids],
        "fee": [0.1] * n,
        "note": [note] * n,
        "is_maker": [i % 2 == 0 for i in ids],
        "seq": list(ids),
        "updated_at": pa.array([updated] * n, pa.int64()).cast(TS),
    }, schema=FILLS.schema)


def rows_by_key(table: pa.Table, key: str = "fill_id") -> dict[object, dict[str, object]]:
    return {r[key]: r for r in table.to_pylist()}


def test_dataset_upsert_is_idempotent_and_reads_back_exactly(store: Store) -> None:
    batch = fills(list(range(20)))
    assert store.upsert(FILLS, batch) == 20
    assert store.upsert(FILLS, batch) == 20
    got = store.read(FILLS)
    assert got.schema.equals(FILLS.schema)
    assert got.equals(batch)  # ordered by the key, values exact


def test_a_session_reads_and_writes_as_single_calls_do(store: Store) -> None:
    store.upsert(FILLS, fills(list(range(5))))
    with store.session():
        assert store.read(FILLS).equals(fills(list(range(5))))
        store.upsert(FILLS, fills([5, 6]))
        assert store.read(FILLS).num_rows == 7  # a write inside the block is seen inside it
        assert store.read(CANDLES).num_rows == 0  # an absent table still reads as empty
    assert store.read(FILLS).equals(fills(list(range(7))))


def test_dataset_later_write_wins(store: Store) -> None:
    store.upsert(FILLS, fills(list(range(10)), price=1.0, updated=T0))
    store.upsert(FILLS, fills([3, 4], price=2.0, updated=T0 + HOUR_MS, note=None))
    got = rows_by_key(store.read(FILLS))
    assert len(got) == 10
    assert [got[f"f{i:05d}"]["price"] for i in range(10)] == [1.0] * 3 + [2.0] * 2 + [1.0] * 5
    assert got["f00003"]["note"] is None and got["f00002"]["note"] == "n"


def test_dataset_without_version_column_later_write_wins(store: Store) -> None:
    def marks(value: float, label: str) -> pa.Table:
        return pa.table({"symbol": ["BTC"] * 3,
                         "ts": pa.array([T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS],
                                        pa.int64()).cast(TS),
                         "mark": [value] * 3, "label": [label] * 3}, schema=MARKS.schema)

    store.upsert(MARKS, marks(1.0, "first"))
    store.upsert(MARKS, marks(2.0, "second"))
    store.upsert(MARKS, marks(1.5, "third"))  # a smaller value, written last
    got = store.read(MARKS)
    assert got.num_rows == 3
    assert got.column("mark").to_pylist() == [1.5] * 3
    assert got.column("label").to_pylist() == ["third"] * 3


def test_partial_upsert_never_nulls_columns_it_does_not_carry(store: Store) -> None:
    store.upsert(FILLS, fills(list(range(5))))
    partial = pa.table({
        "account": ["a1", "a1"], "fill_id": ["f00001", "f00099"],
        "price": [9.0, 8.0],
        "updated_at": pa.array([T0 + HOUR_MS] * 2, pa.int64()).cast(TS),
        "ts": pa.array([T0, T0], pa.int64()).cast(TS),
    })
    assert store.upsert(FILLS, partial) == 2
    got = rows_by_key(store.read(FILLS))
    assert got["f00001"]["price"] == 9.0
    assert got["f00001"]["note"] == "n" and got["f00001"]["fee"] == 0.1  # kept
    assert got["f00001"]["qty"] == 1.0 and got["f00001"]["seq"] == 1
    assert got["f00099"]["price"] == 8.0 and got["f00099"]["note"] is None  # new: null
    assert got["f00000"]["price"] == 1.0 and len(got) == 6


def test_partial_candle_upsert_keeps_volumes_it_does_not_carry(store: Store) -> None:
    ts = grid(BTC, T0, 6)
    store.upsert_candles(candles(BTC, ts, price=100.0, trades=[5] * 6))
    fresh = candles(BTC, ts[2:4], price=200.0, ingested_at_ms=T0 + HOUR_MS)
    assert store.upsert_candles(fresh.drop_columns(["quote_volume", "trades"])) == 2
    got = store.read_candles(BTC).to_pylist()
    assert [r["open"] for r in got] == [100.0, 100.0, 200.0, 200.0, 100.0, 100.0]
    assert [r["trades"] for r in got] == [5] * 6
    assert [r["quote_volume"] for r in got] == [1000.0] * 6
    assert store.span(BTC).count == 6  # type: ignore[union-attr]


def test_read_filters_ranges_orders_and_limits(store: Store) -> None:
    store.upsert(FILLS, fills([5, 1, 9, 3, 7], account="a1"))
    store.upsert(FILLS, fills([2, 4], account="a2"))
    by_time = store.read(FILLS, column="ts", lo=T0 + 2 * MINUTE_MS, hi=T0 + 7 * MINUTE_MS)
    assert by_time.column("seq").to_pylist() == [2, 3, 4, 5]  # ts order, hi exclusive
    one = store.read(FILLS, where={"account": "a1"}, column="ts", lo=T0 + 3 * MINUTE_MS)
    assert one.column("seq").to_pylist() == [3, 5, 7, 9]
    assert store.read(FILLS, column="seq", limit=3).column("seq").to_pylist() == [1, 2, 3]
    assert store.read(FILLS, where={"account": "nobody"}).num_rows == 0
    store.upsert(FILLS, fills([11], note=None))
    assert store.read(FILLS, where={"note": None}).column("seq").to_pylist() == [11]
    with pytest.raises(StoreError, match="no column"):
        store.read(FILLS, where={"acount": "a1"})


def test_describe_and_stats(store: Store) -> None:
    assert store.describe(FILLS.name) is None
    store.upsert(FILLS, fills(list(range(30))))
    store.upsert_candles(candles(BTC, grid(BTC, T0, 40)))
    described = store.describe(FILLS.name)
    assert described is not None
    assert described.schema.names == FILLS.schema.names
    assert described.key == FILLS.key
    for field in FILLS.schema:
        assert described.schema.field(field.name).type == field.type
    candle_table = store.describe("candles")
    assert candle_table is not None and candle_table.key == CANDLES.key

    stats = {s.name: s for s in store.stats()}
    assert {FILLS.name, "candles"} <= set(stats)
    for name, rows, newest in ((FILLS.name, 30, T0 + 29 * MINUTE_MS),
                               ("candles", 40, T0 + 39 * MINUTE_MS)):
        assert stats[name].newest_ms == newest
        assert stats[name].rows == rows if stats[name].exact else stats[name].rows >= 0
    only = store.stats([FILLS.name, "no_such_table"])
    assert [s.name for s in only] == [FILLS.name] and only[0].newest_ms == T0 + 29 * MINUTE_MS
    assert store.stats([]) == []


def test_bad_batches_are_rejected_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown column"):
        store.upsert(FILLS, fills([1]).append_column("extra", pa.array([1])))
    with pytest.raises(StoreError, match="key column"):
        store.upsert(FILLS, fills([1]).drop_columns(["fill_id"]))
    null_key = fills([1, 2]).set_column(1, "fill_id", pa.array(["f1", None]))
    with pytest.raises(StoreError, match="ck_test_fills"):
        store.upsert(FILLS, null_key)
    assert store.read(FILLS).num_rows == 0


def test_an_empty_store_reads_as_empty(store: Store) -> None:
    assert store.upsert_candles(CANDLE_SCHEMA.empty_table()) == 0
    assert store.spans() == [] and store.span(BTC) is None and store.latest(BTC) is None
    assert store.read_candles(BTC).schema.equals(CANDLE_SCHEMA)
    assert store.find_gaps().num_rows == 0
    assert store.read(FILLS).schema.equals(FILLS.schema)
    assert store.describe(FILLS.name) is None


def test_check_names_a_missing_table_to_read(store: Store) -> None:
    store.check()
    store.check(FILLS.name, write=True)  # a table to write is created on first write
    with pytest.raises(StoreError, match=FILLS.name):
        store.check(FILLS.name)
    store.upsert(FILLS, fills([1]))
    store.check(FILLS.name)
    store.flushed([FILLS])  # the buffer's hook: harmless on every store


def test_candles_with_an_unknown_column_are_rejected(store: Store) -> None:
    batch = candles(BTC, grid(BTC, T0, 3))
    with pytest.raises(StoreError, match="unknown column"):
        store.upsert_candles(batch.append_column("vwap", pa.array([1.0] * 3)))
    assert store.spans() == []
