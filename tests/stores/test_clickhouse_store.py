"""ClickHouseStore on the embedded chdb engine, through clickhouse-connect: exact reads before
merges, the table layout (versions, monthly partitions), optimize_after_flush, URLs and their
redaction, connection errors, the one-engine-path rule, type round trips and threads.

The shared behaviour is in test_contract.py; a raw client on the session's engine path looks
at what the store left in ClickHouse (parts, partitions, catalogue)."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client

from candlekeep.config.store_types import ClickHouseStoreConfig
from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.schema import TS_TYPE
from candlekeep.core.series import SeriesKey
from candlekeep.core.text import redact_url as redact
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, parse_timeframe
from candlekeep.stores import ch_gaps, clickhouse_store
from candlekeep.stores.ch_conn import parse_url
from candlekeep.stores.ch_sql import replacing_version, sorting_key
from candlekeep.stores.clickhouse_store import ClickHouseStore
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
from tests.stores.conftest import NewStore

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def ch(new_store: NewStore) -> ClickHouseStore:
    store = new_store("clickhouse")
    assert isinstance(store, ClickHouseStore)
    return store


@pytest.fixture
def raw(chdb_path: str) -> Iterator[Client]:
    """A plain client on the session's engine, to look behind the store."""
    client = clickhouse_connect.get_client(interface="chdb", path=chdb_path)
    yield client
    client.close()


def parts(raw: Client, store: ClickHouseStore, table: str = "candles") -> list[tuple[str, int]]:
    """(partition id, rows) of each active part."""
    return [(p, int(n)) for p, n in raw.query(
        "SELECT partition_id, rows FROM system.parts WHERE database = {db:String} AND "
        "table = {t:String} AND active ORDER BY partition_id, name",
        parameters={"db": store.database, "t": table}).result_rows]


def stored_rows(raw: Client, store: ClickHouseStore, table: str = "candles") -> int:
    """Rows as stored, before merges (no FINAL): twins counted twice."""
    return int(raw.query(f"SELECT count() FROM `{store.database}`.`{table}`").result_rows[0][0])


def stop_merges(raw: Client, store: ClickHouseStore, table: str = "candles") -> None:
    raw.command(f"SYSTEM STOP MERGES `{store.database}`.`{table}`")


# --------------------------------------------------------------------------- before merges


def test_every_read_shows_one_row_per_key_before_merges(ch: ClickHouseStore, raw: Client) -> None:
    ts = grid(BTC, T0, 600)
    kept = without(ts, 100, 200, 201, 202, 599 - 1)
    ch.upsert_candles(candles(BTC, kept, price=1.0))
    ch.upsert_candles(candles(ETH, ts, price=1.0))
    stop_merges(raw, ch)
    newer = T0 + HOUR_MS
    ch.upsert_candles(candles(BTC, kept, price=2.0, ingested_at_ms=newer))
    ch.upsert_candles(candles(ETH, ts[:300], price=2.0, ingested_at_ms=newer))

    n = len(kept) + len(ts)
    assert stored_rows(raw, ch) == n + len(kept) + 300  # the twins are there, unmerged
    assert len(parts(raw, ch)) == 4
    btc = ch.read_candles(BTC)
    assert btc.num_rows == len(kept)
    assert set(btc.column("open").to_pylist()) == {2.0}
    assert {ms_of(v) for v in btc.column("ingested_at").to_pylist()} == {newer}
    assert ch.read_candles(ETH).column("open").to_pylist() == [2.0] * 300 + [1.0] * 300
    assert ch.read(CANDLES).num_rows == n
    assert ch.read(CANDLES, where={"symbol": "BTC/USDT"}, limit=5).column("open").to_pylist() \
        == [2.0] * 5
    spans = {s.series: (s.first_ms, s.last_ms, s.count) for s in ch.spans()}
    assert spans == {BTC: (ts[0], ts[-1], len(kept)), ETH: (ts[0], ts[-1], len(ts))}
    stored = {BTC: kept, ETH: ts}
    assert gaps(ch.find_gaps()) == reference_gaps(stored, None, None)
    assert gaps(ch.find_gaps(BTC, ts[150], ts[203])) == reference_gaps(
        {BTC: kept}, ts[150], ts[203])
    (stats,) = ch.stats()
    assert stats.name == "candles" and not stats.exact and stats.rows == stored_rows(raw, ch)
    assert stats.newest_ms == ts[-1]


@pytest.mark.parametrize("seed", range(4))
def test_gaps_with_twins_match_the_reference(ch: ClickHouseStore, raw: Client, seed: int) -> None:
    rng = random.Random(seed)
    ch.upsert_candles(candles(BTC, [T0]))
    stop_merges(raw, ch)
    stored: dict[SeriesKey, list[int]] = {}
    for n in range(3):
        key = SeriesKey("binance", f"S{n}/USDT", rng.choice(["1m", "5m", "1h", "1w"]))
        count = rng.randint(300, 2000)
        ts = grid(key, T0 - 1000 * parse_timeframe(key.timeframe).ms, count)
        kept = [t for t, k in zip(ts, random_holes(rng, count), strict=True) if k]
        stored[key] = kept
        for _ in range(3):  # overlapping pieces, each its own part
            a = rng.randint(0, len(kept) - 1)
            ch.upsert_candles(candles(key, kept[a:a + rng.randint(1, len(kept))]))
        ch.upsert_candles(candles(key, kept))
    stored[BTC] = [T0]
    assert gaps(ch.find_gaps()) == reference_gaps(stored, None, None)
    for _ in range(4):
        a = T0 + rng.randint(-3000, 500) * rng.choice([1, MINUTE_MS, HOUR_MS])
        b = a + rng.randint(0, 3000) * rng.choice([MINUTE_MS, HOUR_MS])
        assert gaps(ch.find_gaps(None, a, b)) == reference_gaps(stored, a, b)
    assert {s.series: s.count for s in ch.spans()} == {k: len(v) for k, v in stored.items()}


def test_a_key_written_again_with_an_older_version_keeps_the_newer(ch: ClickHouseStore) -> None:
    """ReplacingMergeTree keeps the highest ingested_at: a re-sync of older candles does not
    undo a newer fetch (on a tie, the later insert wins)."""
    ts = grid(BTC, T0, 3)
    ch.upsert_candles(candles(BTC, ts, price=2.0, ingested_at_ms=T0 + HOUR_MS))
    ch.upsert_candles(candles(BTC, ts, price=1.0, ingested_at_ms=T0))
    assert ch.read_candles(BTC).column("open").to_pylist() == [2.0] * 3
    ch.upsert_candles(candles(BTC, ts, price=3.0, ingested_at_ms=T0 + HOUR_MS))
    assert ch.read_candles(BTC).column("open").to_pylist() == [3.0] * 3


NOTES = Dataset(  # no version, no time column
    "ck_test_notes",
    pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("text", pa.string())]),
    key=("id",),
)


def test_without_a_version_the_later_insert_wins_before_and_after_merges(
    ch: ClickHouseStore, raw: Client
) -> None:
    ch.upsert(NOTES, pa.table({"id": ["a", "b"], "text": ["one", "one"]}, schema=NOTES.schema))
    stop_merges(raw, ch, NOTES.name)
    for text in ("two", "three"):
        ch.upsert(NOTES, pa.table({"id": ["a"], "text": [text]}, schema=NOTES.schema))
    assert ch.read(NOTES).to_pylist() == [{"id": "a", "text": "three"},
                                          {"id": "b", "text": "one"}]
    raw.command(f"SYSTEM START MERGES `{ch.database}`.`{NOTES.name}`")
    raw.command(f"OPTIMIZE TABLE `{ch.database}`.`{NOTES.name}` FINAL")
    assert stored_rows(raw, ch, NOTES.name) == 2
    assert ch.read(NOTES).column("text").to_pylist() == ["three", "one"]


def test_a_version_column_clickhouse_cannot_order_is_refused(ch: ClickHouseStore) -> None:
    signed = Dataset("ck_test_signed", pa.schema([
        pa.field("id", pa.string(), nullable=False), pa.field("rev", pa.int64(), nullable=False),
    ]), key=("id",), version="rev")
    with pytest.raises(StoreError, match="version column rev is int64"):
        ch.upsert(signed, pa.table({"id": ["a"], "rev": [1]}, schema=signed.schema))


# --------------------------------------------------------------------------- layout


def test_layout_monthly_partitions_and_catalogue(ch: ClickHouseStore, raw: Client) -> None:
    h1 = SeriesKey("binance", "BTC/USDT", "1h")
    ch.upsert_candles(candles(h1, grid(h1, T0, 24 * 75)))  # mid-November to end of January
    assert sorted({p for p, _ in parts(raw, ch)}) == ["202311", "202312", "202401"]
    (row,) = raw.query("SELECT engine_full, partition_key, sorting_key FROM system.tables "
                       "WHERE database = {db:String} AND name = 'candles'",
                       parameters={"db": ch.database}).result_rows
    assert row[0].startswith("ReplacingMergeTree(ingested_at)")
    assert row[1:] == ("toYYYYMM(ts)", "source, symbol, timeframe, ts")
    types = {name: type_ for name, type_ in raw.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'candles'",
        parameters={"db": ch.database}).result_rows}
    assert types["symbol"] == "LowCardinality(String)"
    assert types["ts"] == "DateTime64(3, 'UTC')" and types["trades"] == "Nullable(Int64)"

    d1 = SeriesKey("binance", "BTC/USDT", "1d")
    days = grid(d1, T0 - 12 * 365 * DAY_MS, 12 * 365)  # 145 months in one insert
    assert ch.upsert_candles(candles(d1, days)) == len(days)
    assert ch.span(d1) == ch.spans(series=d1)[0] and ch.spans(series=d1)[0].count == len(days)

    ch.upsert(NOTES, pa.table({"id": ["a"], "text": ["x"]}, schema=NOTES.schema))
    (row,) = raw.query("SELECT engine_full, partition_key FROM system.tables WHERE "
                       "database = {db:String} AND name = {t:String}",
                       parameters={"db": ch.database, "t": NOTES.name}).result_rows
    assert row[0].startswith("ReplacingMergeTree ORDER BY id") and row[1] == ""
    assert ch.describe(NOTES.name) == NOTES  # one key column, no version, no time


def test_no_partitions_by_a_time_column_outside_the_key(ch: ClickHouseStore, raw: Client) -> None:
    """A key's rows must stay in one partition for merges to replace them."""
    orders = Dataset("ck_test_orders", pa.schema([
        pa.field("order_id", pa.string(), nullable=False),
        pa.field("updated_at", TS_TYPE, nullable=False),
    ]), key=("order_id",), version="updated_at", time="updated_at")
    for when in (T0, T0 + 40 * DAY_MS):  # the same order, updated a month later
        ch.upsert(orders, pa.table({"order_id": ["o1"], "updated_at": pa.array(
            [when], pa.int64()).cast(TS_TYPE)}, schema=orders.schema))
    assert {p for p, _ in parts(raw, ch, orders.name)} == {"all"}
    assert ms_of(ch.read(orders).column("updated_at")[0].as_py()) == T0 + 40 * DAY_MS


def test_stats_are_exact_once_each_partition_is_one_part(ch: ClickHouseStore,
                                                         raw: Client) -> None:
    ts = grid(BTC, T0, 100)
    ch.upsert_candles(candles(BTC, ts))
    (stats,) = ch.stats()
    assert (stats.rows, stats.exact, stats.newest_ms) == (100, True, ts[-1])
    stop_merges(raw, ch)
    ch.upsert_candles(candles(BTC, ts[50:]))
    (stats,) = ch.stats()
    assert (stats.rows, stats.exact) == (150, False)


def test_optimize_after_flush(new_store: NewStore, raw: Client) -> None:
    on = new_store("clickhouse", optimize_after_flush=True)
    off = new_store("clickhouse")
    assert isinstance(on, ClickHouseStore) and isinstance(off, ClickHouseStore)
    ts = grid(BTC, T0, 200)
    on.upsert_candles(candles(SeriesKey("x", "BTC/USDT", "1d"), [T0 - 100 * DAY_MS]))
    on.flushed([CANDLES])  # an older partition, merged already: skipped from now on
    for store in (on, off):
        store.upsert_candles(candles(BTC, ts, price=1.0))
        if store is off:
            stop_merges(raw, off)
        store.upsert_candles(candles(BTC, ts, price=2.0))
        store.flushed([CANDLES, NOTES])  # NOTES was never written: nothing to do
    assert parts(raw, on) == [("202308", 1), ("202311", 200)]
    assert stored_rows(raw, on) == 201
    assert on.read_candles(BTC).column("open").to_pylist() == [2.0] * 200
    assert next(s for s in on.stats() if s.name == "candles").exact
    assert parts(raw, off) == [("202311", 200), ("202311", 200)]  # off by default


# --------------------------------------------------------------------------- types


TYPED = Dataset(
    "ck_test_typed",
    pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("at", TS_TYPE, nullable=False),
        *(pa.field(f"i{b}", getattr(pa, f"int{b}")()) for b in (8, 16, 32, 64)),
        *(pa.field(f"u{b}", getattr(pa, f"uint{b}")(), nullable=False) for b in (8, 16, 32, 64)),
        pa.field("f32", pa.float32()),
        pa.field("f64", pa.float64(), nullable=False),
        pa.field("flag", pa.bool_()),
        pa.field("day", pa.date32()),
        pa.field("t_s", pa.timestamp("s", tz="UTC")),
        pa.field("t_us", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("amount", pa.decimal128(18, 6)),
        pa.field("text", pa.string()),
        pa.field("rev", pa.uint64(), nullable=False),
    ]),
    key=("id", "at"),
    version="rev",
)


def typed_rows() -> pa.Table:
    big = [-(2**63), 2**63 - 1, 0]
    return pa.table({
        "id": ["plain", "it's \\ \"quoted\" ünï", "x"],
        "at": pa.array([T0, T0 + 1, T0 + 31 * DAY_MS], pa.int64()).cast(TS_TYPE),
        "i8": pa.array([-128, 127, None], pa.int8()),
        "i16": pa.array([-(2**15), None, 1], pa.int16()),
        "i32": pa.array([None, 2**31 - 1, -1], pa.int32()),
        "i64": pa.array(big, pa.int64()),
        "u8": pa.array([0, 255, 1], pa.uint8()),
        "u16": pa.array([0, 2**16 - 1, 1], pa.uint16()),
        "u32": pa.array([0, 2**32 - 1, 1], pa.uint32()),
        "u64": pa.array([0, 2**64 - 1, 1], pa.uint64()),
        "f32": pa.array([1.5, None, -0.25], pa.float32()),
        "f64": [float("inf"), -1e-300, 1.0 / 3],
        "flag": [True, False, None],
        "day": pa.array([date(1970, 1, 1), date(2299, 12, 31), None], pa.date32()),
        "t_s": pa.array([0, None, 4_102_444_800], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
        "t_us": pa.array([1, 1_700_000_000_123_456, 0], pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "amount": pa.array([Decimal("123456789012.123456"), Decimal("-0.000001"), None],
                           pa.decimal128(18, 6)),
        "text": ["", None, "line\nbreak\ttab"],
        "rev": pa.array([1, 2, 3], pa.uint64()),
    }, schema=TYPED.schema)


def test_types_round_trip_and_describe(ch: ClickHouseStore) -> None:
    batch = typed_rows()
    assert ch.upsert(TYPED, batch) == 3
    got = ch.read(TYPED)
    assert got.schema.equals(TYPED.schema)
    assert got.equals(batch.sort_by([("id", "ascending"), ("at", "ascending")]))
    assert ch.read(TYPED, where={"id": "it's \\ \"quoted\" ünï"}).num_rows == 1
    assert ch.read(TYPED, column="at", lo=T0 + 1).column("id").to_pylist()[0] != "plain"
    assert ch.read(TYPED, column="day", lo=date(2000, 1, 1)).num_rows == 1

    described = ch.describe(TYPED.name)
    assert described is not None
    ms = pa.timestamp("ms", tz="UTC")  # candlekeep describes every time in milliseconds
    assert described.schema.equals(pa.schema(
        [f.with_type(ms) if pa.types.is_timestamp(f.type) else f for f in TYPED.schema]))
    assert (described.key, described.version) == (TYPED.key, "rev")
    assert ch.describe("candles") is None
    ch.upsert_candles(candles(BTC, [T0]))
    assert ch.describe("candles") == CANDLES


def test_partial_batches_with_awkward_keys(ch: ClickHouseStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ch.upsert(TYPED, typed_rows())
    monkeypatch.setattr(clickhouse_store, "_KEY_SQL_BYTES", 60)  # one lookup per key
    update = typed_rows().select(["id", "at", "f64"]).set_column(
        2, "f64", pa.array([7.0, 8.0, 9.0]))
    assert ch.upsert(TYPED, update) == 3
    got = ch.read(TYPED, column="rev")
    assert got.column("f64").to_pylist() == [7.0, 8.0, 9.0]
    assert got.drop_columns(["f64"]).equals(typed_rows().drop_columns(["f64"]))
    new_key = pa.table({"id": ["new"], "at": pa.array([T0], TS_TYPE), "f64": [1.0]})
    with pytest.raises(StoreError, match="have no stored row"):
        ch.upsert(TYPED, new_key)

    levels = Dataset("ck_test_levels", pa.schema([
        pa.field("level", pa.decimal128(18, 6), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("flag", pa.bool_(), nullable=False),
        pa.field("size", pa.float64()), pa.field("note", pa.string()),
    ]), key=("level", "day", "flag"))
    keys = {"level": pa.array([Decimal("123456789012.123457")], pa.decimal128(18, 6)),
            "day": pa.array([date(2024, 2, 29)]), "flag": [False]}
    ch.upsert(levels, pa.table({**keys, "size": [1.0], "note": ["kept"]}, schema=levels.schema))
    ch.upsert(levels, pa.table({**keys, "size": [2.0]}))
    assert ch.read(levels).select(["size", "note"]).to_pylist() == [{"size": 2.0, "note": "kept"}]


def test_partial_batches_find_time_keys_in_any_timezone(ch: ClickHouseStore, raw: Client) -> None:
    """Key times are instants: a table written by others may keep them in a local timezone
    (where one wall-clock hour happens twice a year) or in whole seconds."""
    ch.upsert(NOTES, pa.table({"id": ["a"], "text": ["x"]}, schema=NOTES.schema))  # the db
    raw.command(f"CREATE TABLE `{ch.database}`.local (id String, "
                "ts DateTime64(3, 'Europe/Berlin'), day DateTime('America/New_York'), "
                "a Nullable(Float64), b Nullable(Float64)) "
                "ENGINE = ReplacingMergeTree ORDER BY (id, ts, day)")
    fall_back = 1_698_539_400_000  # 2023-10-29 00:30 UTC, 02:30 in Berlin, as an hour later
    times = [fall_back, fall_back + HOUR_MS, T0 + 123]
    raw.command(f"INSERT INTO `{ch.database}`.local SELECT 'k', fromUnixTimestamp64Milli(t), "
                f"toDateTime(intDiv(t, 1000)), 1.0, 2.0 FROM (SELECT arrayJoin({times}) AS t)")
    local = ch.describe("local")
    assert local is not None and local.key == ("id", "ts", "day")
    ts = pa.array(times, pa.int64()).cast(TS_TYPE)
    days = pa.array([t // 1000 * 1000 for t in times], pa.int64()).cast(TS_TYPE)
    assert ch.upsert(local, pa.table({"id": ["k"] * 3, "ts": ts, "day": days,
                                      "a": [5.0, 6.0, 7.0]})) == 3
    got = ch.read(local, column="ts")
    assert got.column("ts").to_pylist() == ts.to_pylist()
    assert got.column("day").to_pylist() == days.to_pylist()
    assert got.select(["a", "b"]).to_pylist() == [{"a": a, "b": 2.0} for a in (5.0, 6.0, 7.0)]


def test_describe_tables_written_by_others(ch: ClickHouseStore, raw: Client) -> None:
    ch.upsert(NOTES, pa.table({"id": ["a"], "text": ["x"]}, schema=NOTES.schema))  # the db
    raw.command(f"CREATE TABLE `{ch.database}`.foreign (a String, t DateTime('UTC'), "
                "v UInt32, e Enum8('x' = 1)) ENGINE = ReplacingMergeTree(v) "
                "ORDER BY (a, toStartOfDay(t))")
    raw.command(f"INSERT INTO `{ch.database}`.foreign VALUES ('k', '2024-01-02 03:04:05', 1, 'x')")
    described = ch.describe("foreign")
    assert described is not None
    assert described.key == () and described.version == "v"
    assert described.schema.field("t").type == TS_TYPE  # DateTime: seconds, read as ms
    assert described.schema.field("e").type == pa.int8()  # as the engine's Arrow output has it
    read = ch.read(described)
    assert read.column("t").cast(pa.int64()).to_pylist() == [1704164645000]
    assert read.column("e").to_pylist() == [1]
    with pytest.raises(StoreError, match="no key"):
        ch.upsert(described, read)


def test_a_foreign_table_with_microsecond_times_reads_as_milliseconds(
    ch: ClickHouseStore, raw: Client
) -> None:
    """Truncated to candlekeep's ms, as DuckDB and PostgreSQL read them; a value the dataset's
    type cannot hold is a StoreError naming the table."""
    ch.upsert(NOTES, pa.table({"id": ["a"], "text": ["x"]}, schema=NOTES.schema))  # the db
    raw.command(f"CREATE TABLE `{ch.database}`.ticks (id UInt64, seen DateTime64(6, 'UTC'), "
                "n Int64) ENGINE = ReplacingMergeTree ORDER BY id")
    raw.command(f"INSERT INTO `{ch.database}`.ticks VALUES "
                "(1, fromUnixTimestamp64Micro(toInt64(1700000000123456)), 1099511627776)")
    ticks = ch.describe("ticks")
    assert ticks is not None
    got = ch.read(ticks)
    assert got.column("seen").cast(pa.int64()).to_pylist() == [1_700_000_000_123]
    for wrong in (pa.int32(), pa.date32()):  # out of range; no cast at all
        narrow = Dataset("ticks", ticks.schema.set(2, pa.field("n", wrong)), key=("id",))
        with pytest.raises(StoreError, match=rf"store test: table {ch.database}\.ticks: "
                                             "column n: cannot read int64 as"):
            ch.read(narrow)


def test_a_table_that_never_replaces_rows_is_read_but_not_written(
    ch: ClickHouseStore, raw: Client
) -> None:
    """A plain MergeTree keeps every row inserted: an upsert there would leave two rows per
    key. Its sorting key still serves reading it (a sync source)."""
    ch.upsert(NOTES, pa.table({"id": ["a"], "text": ["x"]}, schema=NOTES.schema))  # the db
    raw.command(f"CREATE TABLE `{ch.database}`.plain (id UInt64, ver UInt64, "
                "v Nullable(Float64)) ENGINE = MergeTree ORDER BY id")
    raw.command(f"INSERT INTO `{ch.database}`.plain VALUES (1, 1, 1.0)")
    plain = ch.describe("plain")
    assert plain is not None and (plain.key, plain.version) == (("id",), None)
    assert ch.read(plain).to_pylist() == [{"id": 1, "ver": 1, "v": 1.0}]
    ch.check("plain")

    refused = (rf"store test: table {ch.database}\.plain has engine MergeTree, which keeps "
               r"every row written: .* Recreate it as ReplacingMergeTree\({}\) ORDER BY id, or "
               "write to another table")
    with pytest.raises(StoreError, match=refused.format("<version column>")):
        ch.check("plain", write=True)
    full = pa.table({"id": pa.array([1], pa.uint64()), "ver": pa.array([2], pa.uint64()),
                     "v": [2.0]})
    for dataset, batch, version in (
            (plain, full, ""),
            (plain, full.select(["id", "v"]), ""),  # partial: refused before its look-up
            (dataclasses.replace(plain, version="ver"), full, "ver")):
        with pytest.raises(StoreError, match=refused.format(version).replace(r"\(\)", "")):
            ch.upsert(dataset, batch)
    assert stored_rows(raw, ch, "plain") == 1


def test_engine_full_and_sorting_key_parsing() -> None:
    cols = ["a", "ts", "updated_at", "is_deleted"]
    shared = ("SharedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', "
              "updated_at) PARTITION BY toYYYYMM(ts) ORDER BY (a, ts) SETTINGS x = 1")
    assert replacing_version(shared, cols) == "updated_at"
    assert replacing_version("ReplacingMergeTree(updated_at, is_deleted) ORDER BY a",
                             cols) == "updated_at"
    assert replacing_version("ReplicatedReplacingMergeTree('/p', '{replica}') ORDER BY a",
                             cols) is None
    assert replacing_version("ReplacingMergeTree ORDER BY a", cols) is None
    assert replacing_version("MergeTree ORDER BY a", cols) is None
    assert sorting_key("a, `ts`", cols) == ("a", "ts")
    assert sorting_key("(a)", cols) == ("a",)  # ORDER BY (a)
    assert sorting_key("(a, ts)", cols) == ("a", "ts")  # ORDER BY tuple((a, ts))
    assert sorting_key("a, toDate(ts)", cols) == ()


# --------------------------------------------------------------------------- gaps


def test_gap_scan_in_several_queries_for_long_symbol_lists(
    ch: ClickHouseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    stored: dict[SeriesKey, list[int]] = {}
    for n in range(12):
        key = SeriesKey(f"ex{n % 2}", f"SYMBOL{n:02d}/USDT", "1m" if n % 3 else "4h")
        ts = grid(key, T0, 400)
        stored[key] = [t for t, k in zip(ts, random_holes(rng, 400), strict=True) if k]
        ch.upsert_candles(candles(key, stored[key]))
    monkeypatch.setattr(ch_gaps, "_MAX_LITERALS", 50)  # about two symbols per query
    assert gaps(ch.find_gaps()) == reference_gaps(stored, None, None)
    a, b = T0 + 30 * MINUTE_MS, T0 + 20 * HOUR_MS
    assert gaps(ch.find_gaps(None, a, b)) == reference_gaps(stored, a, b)


def test_window_between_two_candles_far_apart(ch: ClickHouseStore) -> None:
    w1 = SeriesKey("binance", "BTC/USDT", "1w")
    weeks = grid(w1, T0, 600)
    ch.upsert_candles(candles(w1, [weeks[0], weeks[-1]]))
    assert gaps(ch.find_gaps(w1, weeks[300], weeks[301])) == [gap(w1, weeks[300], weeks[300])]
    assert gaps(ch.find_gaps()) == [gap(w1, weeks[1], weeks[-2])]


# --------------------------------------------------------------------------- URLs, errors


def test_url_parsing() -> None:
    server = parse_url("ck", "https://bob:p%40ss@ch.example.com:8443/market", None)
    assert (server.database, server.chdb_path, server.password) == ("market", None, "p@ss")
    assert server.redacted == "https://bob:***@ch.example.com:8443/market"
    assert server.scrub("p@ss and p%40ss") == "*** and ***"
    assert parse_url("ck", "http://ch:8123/market", "other").database == "other"
    assert parse_url("ck", "clickhouse://ch", None).database == "default"
    assert parse_url("ck", "chdb:///var/lib/ck", None).chdb_path == "/var/lib/ck"
    assert parse_url("ck", "chdb://memory", "db").chdb_path == ":memory:"
    assert redact("http://ch:8123/db") == "http://ch:8123/db"


@pytest.mark.parametrize("password", ["pa/ss", "pa#ss", "pa?ss", "12/ab", "p@ss", "p:ss",
                                      "p/@?#"])
def test_passwords_with_unencoded_url_characters_are_masked(password: str) -> None:
    """urlsplit finds no password (or the wrong one) when it holds / # ? or @: the mask does
    not rely on it."""
    url = f"http://bob:{password}@ch:8123/db"
    assert redact(url) == "http://bob:***@ch:8123/db"
    if any(c in password for c in "/?#"):  # the host urlsplit sees is wrong: refused
        with pytest.raises(StoreError, match="percent-encode") as err:
            ClickHouseStore("ck", url)
        shown = str(err.value)
    else:
        shown = repr(ClickHouseStore("ck", url))
    assert password not in shown and "bob:***@ch:8123" in shown


def test_the_target_repr_hides_the_password() -> None:
    """The pool keeps the target's bound ``open``: its repr (in a debugger, a log of the
    pool) must not carry the password."""
    store = ClickHouseStore("ck", "http://bob:s3cr3t@ch:8123/db")
    for shown in (repr(store._target), str(store._target), repr(store._pool._open_one)):
        assert "s3cr3t" not in shown and "bob:***@ch:8123" in shown


@pytest.mark.parametrize("url, problem", [
    ("http://bob:s3cr3t@ch:port/db", "invalid host or port"),
    ("http://bob:s3cr3t@/db", "use http"),
    ("ftp://bob:s3cr3t@ch/db", "use http"),
    ("http://bob:s3cr3t@ch/bad-name", "database 'bad-name'"),
    ("chdb://", "names no engine path"),
])
def test_bad_urls_name_the_key_and_hide_the_password(url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=problem) as err:
        ClickHouseStore("ck", url)
    assert "stores.ck.url" in str(err.value) and "s3cr3t" not in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1:1", "no-such-host.invalid:8123"])
def test_unreachable_server_names_the_key_and_hides_the_password(host: str) -> None:
    store = ClickHouseStore("ck", f"http://bob:s3cr3t@{host}/db")
    assert "s3cr3t" not in repr(store) and "bob:***@" in repr(store)
    for call in (store.check, store.spans, lambda: store.read(CANDLES)):
        with pytest.raises(StoreError, match="cannot reach ClickHouse") as err:
            call()
        text = str(err.value)
        assert "stores.ck.url" in text and "s3cr3t" not in text
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_config_keeps_the_url_secret() -> None:
    cfg = ClickHouseStoreConfig.model_validate(
        {"type": "clickhouse", "url": "https://bob:s3cr3t@ch:8443/db"})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.model_dump())


def _child(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_second_engine_path_in_one_process_is_a_clear_error(tmp_path: Path) -> None:
    done = _child(f"""
        from candlekeep.core.errors import StoreError
        from candlekeep.stores.clickhouse_store import ClickHouseStore
        first = ClickHouseStore("first", "chdb://{tmp_path / 'one'}")
        print(first.spans())  # opens the engine (and keeps its client)
        try:
            ClickHouseStore("second", "chdb://{tmp_path / 'two'}").spans()
        except StoreError as exc:
            print(exc)
        first.close()
        print(ClickHouseStore("third", "chdb://{tmp_path / 'two'}").spans())  # engine closed
    """)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "[]" and out[2] == "[]"
    assert "one engine path per process" in out[1] and "stores.second.url" in out[1]
    assert str(tmp_path / "one") in out[1] and str(tmp_path / "two") in out[1]


def test_a_client_in_use_during_close_ends_with_it(tmp_path: Path) -> None:
    """close() while another thread is in a call: that call's client is closed when it
    returns, not pooled, so the engine shuts down and another path may open."""
    done = _child(f"""
        from candlekeep.stores.clickhouse_store import ClickHouseStore
        first = ClickHouseStore("first", "chdb://{tmp_path / 'one'}")
        with first._client():  # as a call in flight
            first.close()
        print(ClickHouseStore("second", "chdb://{tmp_path / 'two'}").spans())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]"]


def test_a_path_another_process_holds_is_a_clear_error(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from candlekeep.stores.clickhouse_store import ClickHouseStore
        store = ClickHouseStore("holder", "chdb://{tmp_path}")
        print(store.spans(), flush=True)  # the engine is open while the store keeps a client
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "[]"
        done = _child(f"""
            from candlekeep.core.errors import StoreError
            from candlekeep.stores.clickhouse_store import ClickHouseStore
            try:
                ClickHouseStore("ck", "chdb://{tmp_path}").spans()
            except StoreError as exc:
                print(exc)
        """)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "another process has it open" in done.stdout and "stores.ck.url" in done.stdout


def test_without_the_extra_the_error_says_what_to_install(tmp_path: Path) -> None:
    done = _child(f"""
        import sys
        sys.modules["clickhouse_connect"] = None  # as if not installed
        import candlekeep.config.loader, candlekeep.stores.registry  # importing still works
        from candlekeep.config.store_types import ClickHouseStoreConfig
        from candlekeep.core.errors import StoreError
        from candlekeep.stores.registry import make_store
        cfg = ClickHouseStoreConfig(type="clickhouse", url="chdb://{tmp_path}")
        try:
            make_store("ck", cfg, None)
        except StoreError as exc:
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    assert "pip install 'candlekeep[clickhouse]'" in done.stdout
    done = _child(f"""
        import sys
        sys.modules["chdb"] = None
        from candlekeep.core.errors import StoreError
        from candlekeep.stores.clickhouse_store import ClickHouseStore
        try:
            ClickHouseStore("ck", "chdb://{tmp_path}").spans()
        except StoreError as exc:
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    assert "stores.ck.url" in done.stdout and "pip install 'candlekeep[clickhouse]'" in done.stdout


def test_check(ch: ClickHouseStore, new_store: NewStore) -> None:
    ch.check()
    ch.check("candles", write=True)
    with pytest.raises(StoreError, match=rf"table {ch.database}\.candles does not exist \(nor"):
        ch.check("candles")
    ch.upsert_candles(candles(BTC, [T0]))
    ch.check("candles")
    with pytest.raises(StoreError, match=r"does not exist$"):
        ch.check("other")
    optimizing = new_store("clickhouse", optimize_after_flush=True)
    optimizing.upsert_candles(candles(BTC, [T0]))
    optimizing.check("candles", write=True)  # chdb has no users: every privilege is held


def test_a_readonly_user_still_gets_spans_and_gaps(ch: ClickHouseStore) -> None:
    ts = grid(BTC, T0, 100)
    ch.upsert_candles(candles(BTC, without(ts, 5)))
    with ch._client() as client:  # the pool's one client, from now on in readonly mode
        client.command("SET readonly = 1")
    with pytest.raises(StoreError, match="readonly"):
        ch.upsert_candles(candles(BTC, [ts[5]]))
    assert [(s.series, s.count) for s in ch.spans()] == [(BTC, 99)]
    assert gaps(ch.find_gaps()) == [gap(BTC, ts[5], ts[5])]
    assert ch.read_candles(BTC).num_rows == 99


# --------------------------------------------------------------------------- threads


def test_threads_share_one_store(ch: ClickHouseStore) -> None:
    keys = [SeriesKey("binance", f"S{i}/USDT", "1m") for i in range(6)]
    ts = grid(BTC, T0, 300)

    def work(i: int) -> None:
        key = keys[i % len(keys)]
        ch.upsert_candles(candles(key, ts[(i * 7) % 100:(i * 7) % 100 + 200], price=float(i)))
        ch.spans()
        ch.find_gaps(key)
        assert ch.read_candles(key).num_rows >= 200

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(36)))
    spans = ch.spans()
    assert [s.series for s in spans] == sorted(keys)
    assert all(s.count == (s.last_ms - s.first_ms) // MINUTE_MS + 1 for s in spans)
    assert gaps(ch.find_gaps()) == []
