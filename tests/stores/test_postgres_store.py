"""PostgresStore against a real server: the binary COPY encoder's round trip of every type,
both write paths (MERGE and its ON CONFLICT fallback, including a real race), foreign tables,
stats on big tables, the table layout, privileges checked with a real restricted role, and
connection failures that name the config key without the password."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import StoreError
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.stores import pg_catalog
from candlekeep.stores.pg_copy import copy_chunks, stage_type
from candlekeep.stores.postgres_store import PostgresStore
from tests.stores.candle_data import BTC, ETH, T0, candles, gaps, grid, reference_gaps, without

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore("test", pg_url, "data")
    yield s
    s.close()


def admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


TYPES = pa.schema([
    pa.field("k", pa.int64(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("big_text", pa.large_string()),
    pa.field("f8", pa.float64()),
    pa.field("f4", pa.float32()),
    pa.field("i8", pa.int64()),
    pa.field("i4", pa.int32()),
    pa.field("i2", pa.int16()),
    pa.field("i1", pa.int8()),
    pa.field("flag", pa.bool_()),
    pa.field("tstz", pa.timestamp("ms", tz="UTC")),
    pa.field("tstz_us", pa.timestamp("us", tz="UTC")),
    pa.field("ts_naive", pa.timestamp("ms")),
    pa.field("day", pa.date32()),
    pa.field("blob", pa.binary()),
    pa.field("amount", pa.decimal128(12, 4)),
])
ALL_TYPES = Dataset("ck_all_types", TYPES, key=("k",), time="tstz")


def typed_rows(n: int, *, seed: int = 0) -> pa.Table:
    """Every type, with NULLs, edge values and strings of many lengths."""
    texts = ["", "a", "ünïcødé ✓", 'quote " and, comma', "new\nline", "x" * 300, None]
    floats = [0.0, -0.0, 1.5, -1e308, 5e-324, math.inf, -math.inf, 0.1 + 0.2, None]
    ints = [0, 1, -1, 2**62, -(2**62), None]
    stamps = [0, -86_400_000, 946_684_800_000, 1_700_000_000_123, 4_102_444_800_000, None]
    blobs = [b"", b"\x00", b"\x00\xff\x10abc", bytes(range(256)), None]
    rows: dict[str, list[Any]] = {name: [] for name in TYPES.names}
    for i in range(n):
        j = i + seed
        rows["k"].append(i)
        rows["text"].append(texts[j % len(texts)])
        rows["big_text"].append(texts[(j * 3) % len(texts)])
        rows["f8"].append(floats[j % len(floats)])
        rows["f4"].append(None if j % 5 == 4 else float(j % 7) / 4)
        rows["i8"].append(ints[j % len(ints)])
        rows["i4"].append(None if j % 4 == 3 else (-1) ** j * (2**31 - 1 - j))
        rows["i2"].append(None if j % 6 == 5 else (-1) ** j * (32767 - j % 100))
        rows["i1"].append(None if j % 3 == 2 else (-1) ** j * (127 - j % 10))
        rows["flag"].append(None if j % 3 == 0 else j % 2 == 0)
        rows["tstz"].append(stamps[j % len(stamps)])
        rows["tstz_us"].append(None if j % 4 == 1 else 1_700_000_000_123_456 + j)
        rows["ts_naive"].append(stamps[(j + 1) % len(stamps)])
        rows["day"].append(None if j % 5 == 0 else -700 + j * 37)
        rows["blob"].append(blobs[j % len(blobs)])
        rows["amount"].append(None if j % 4 == 0 else Decimal(f"{j * 3 - 50}.{j % 10000:04d}"))
    arrays = []
    for field in TYPES:
        values = rows[field.name]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        elif pa.types.is_date32(field.type):
            arrays.append(pa.array(values, pa.int32()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=TYPES)


def python_value(value: Any) -> Any:
    """What psycopg hands back for a value of the Arrow type, for comparison."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# --------------------------------------------------------------------------- COPY encoder


@pytest.mark.parametrize("scatter", [False, True], ids=["by-layout", "scatter"])
@pytest.mark.parametrize("chunk_rows", [5, 1 << 16])
def test_binary_copy_round_trips_every_type(pg_url: str, scatter: bool, chunk_rows: int) -> None:
    """Encoded by pg_copy, decoded by the server, read back by psycopg's own adapters."""
    table = typed_rows(200)
    cols = ", ".join(f"{f.name} {stage_type(f.type)}" for f in TYPES)
    with admin(pg_url) as conn:
        conn.execute(f"CREATE TABLE t ({cols})")
        with conn.cursor() as cur, cur.copy(
                f"COPY t ({', '.join(TYPES.names)}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in copy_chunks(table, chunk_rows=chunk_rows, scatter=scatter):
                copy.write(piece)
        conn.execute("SET TimeZone = 'UTC'")
        got = conn.execute(f"SELECT {', '.join(TYPES.names)} FROM t ORDER BY k").fetchall()
    want = table.to_pylist()
    assert len(got) == len(want)
    for row, expected in zip(got, want, strict=True):
        for name, value in zip(TYPES.names, row, strict=True):
            wanted = expected[name]
            if name == "amount" and value is not None:
                value = Decimal(value)  # staged as text
            if name == "f4" and wanted is not None:
                wanted = float(wanted)
            assert same(python_value(value), wanted), (name, expected["k"], value, wanted)


def test_both_writers_produce_the_same_rows() -> None:
    table = typed_rows(500, seed=3)
    by_layout = b"".join(bytes(p) for p in copy_chunks(table, chunk_rows=64))
    scattered = b"".join(bytes(p) for p in copy_chunks(table, chunk_rows=64, scatter=True))
    assert len(by_layout) == len(scattered)  # the same rows, perhaps in another order
    assert sorted(by_layout) == sorted(scattered)


def test_store_round_trip_of_every_type(store: PostgresStore) -> None:
    table = typed_rows(120)
    assert store.upsert(ALL_TYPES, table) == 120
    got = store.read(ALL_TYPES)
    assert got.schema.equals(TYPES)
    for name in TYPES.names:
        for a, b in zip(got.column(name).to_pylist(), table.column(name).to_pylist(),
                        strict=True):
            assert same(a, b), (name, a, b)


# --------------------------------------------------------------------------- write paths


@pytest.fixture(params=["merge", "on-conflict"])
def either_path(request: pytest.FixtureRequest, store: PostgresStore) -> PostgresStore:
    if request.param == "on-conflict":
        store._use_merge = False
    return store


def test_write_paths_agree_on_semantics(either_path: PostgresStore) -> None:
    store = either_path
    ts = grid(BTC, T0, 20)
    store.upsert_candles(candles(BTC, ts, price=100.0))
    store.upsert_candles(candles(BTC, ts, price=100.0))  # unchanged rows: nothing to write
    store.upsert_candles(candles(BTC, ts[5:10], price=200.0, trades=[None] * 5))
    partial = candles(BTC, ts[8:12], price=300.0).drop_columns(["quote_volume", "trades"])
    assert store.upsert_candles(partial) == 4
    got = store.read_candles(BTC).to_pylist()
    assert [r["open"] for r in got] == [100.0] * 5 + [200.0] * 3 + [300.0] * 4 + [100.0] * 8
    assert [r["trades"] for r in got] == [7] * 5 + [None] * 5 + [7] * 10
    assert [r["quote_volume"] for r in got][8:12] == [2000.0, 2000.0, 1000.0, 1000.0]


def test_partial_batch_cannot_insert_a_row_without_its_required_columns(
        store: PostgresStore) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 3)))
    partial = candles(BTC, grid(BTC, T0 + 10 * MINUTE_MS, 1)).select(
        ["source", "symbol", "timeframe", "ts", "close"])
    with pytest.raises(StoreError, match="NOT NULL column"):
        store.upsert_candles(partial)
    assert store.span(BTC).count == 3  # type: ignore[union-attr]


def _wait_until_blocked(url: str, application: str) -> None:
    """Until the store's session waits on a lock held by the test."""
    deadline = time.monotonic() + 30
    with admin(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'", [application]).fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the store never waited on the lock")


def test_merge_losing_a_race_is_written_again_with_on_conflict(
        store: PostgresStore, pg_url: str) -> None:
    ts = grid(BTC, T0, 5)
    store.upsert_candles(candles(BTC, ts[:1], price=1.0))  # creates the table
    rival = admin(pg_url)
    rival.execute("BEGIN")
    rival.execute("INSERT INTO data.candles SELECT source, symbol, timeframe, ts + interval "
                  "'2 minutes', open, high, low, close, volume, quote_volume, trades, "
                  "ingested_at FROM data.candles")  # ts[2], not yet committed
    done: list[int] = []
    writer = threading.Thread(
        target=lambda: done.append(store.upsert_candles(candles(BTC, ts, price=2.0))))
    writer.start()
    _wait_until_blocked(pg_url, "candlekeep:test")
    rival.execute("COMMIT")  # MERGE's insert of ts[2] now violates the key
    writer.join()
    rival.close()
    assert done == [5]
    assert store.read_candles(BTC).column("open").to_pylist() == [2.0] * 5


def test_threads_writing_and_reading(store: PostgresStore) -> None:
    keys = [SeriesKey("binance", f"S{i}/USDT", "1m") for i in range(8)]
    ts = grid(BTC, T0, 200)

    def work(i: int) -> None:
        key = keys[i % len(keys)]
        store.upsert_candles(candles(key, ts[(i * 7) % 100:(i * 7) % 100 + 100], price=i))
        store.spans()
        store.find_gaps(key)
        store.read_candles(key)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(48)))
    spans = store.spans()
    assert [s.series for s in spans] == sorted(keys)
    for s in spans:
        assert s.count == (s.last_ms - s.first_ms) // MINUTE_MS + 1
    assert gaps(store.find_gaps()) == []


def test_a_lock_held_elsewhere_times_out_with_a_store_error(pg_url: str) -> None:
    store = PostgresStore("test", pg_url, "data", lock_timeout_s=0.2)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 2)))
    with admin(pg_url) as other:
        other.execute("BEGIN")
        other.execute("LOCK TABLE data.candles IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreError, match="timeout"):
            store.upsert_candles(candles(BTC, grid(BTC, T0, 2), price=5.0))
        other.execute("ROLLBACK")
    store.close()


# --------------------------------------------------------------------------- layout, catalogue


def test_candle_table_suits_a_hypertable(store: PostgresStore, pg_url: str) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 3)))
    with admin(pg_url) as conn:
        indexes = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'data' "
            "AND tablename = 'candles'").fetchall())
    assert any("USING brin (ts)" in d for d in indexes.values())
    assert any("UNIQUE" in d and "(source, symbol, timeframe, ts)" in d
               for d in indexes.values())


def test_foreign_table_is_described_read_and_written(store: PostgresStore, pg_url: str) -> None:
    with admin(pg_url) as conn:
        conn.execute("CREATE SCHEMA data")
        conn.execute("CREATE TABLE data.orders (id uuid PRIMARY KEY, venue varchar(20) NOT "
                     "NULL, price numeric(10, 2), qty real, n smallint, updated_at timestamptz, "
                     "day date, raw bytea)")
        conn.execute("INSERT INTO data.orders VALUES ('00000000-0000-0000-0000-000000000001', "
                     "'x', 12.34, 1.5, 3, '2024-01-02 03:04:05.678+00', '2024-01-02', "
                     "'\\x00ff')")
    orders = store.describe("orders")
    assert orders is not None and orders.key == ("id",)
    assert orders.schema == pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("venue", pa.string(), nullable=False),
        pa.field("price", pa.decimal128(10, 2)),
        pa.field("qty", pa.float32()),
        pa.field("n", pa.int16()),
        pa.field("updated_at", pa.timestamp("ms", tz="UTC")),
        pa.field("day", pa.date32()),
        pa.field("raw", pa.binary()),
    ])
    assert orders.time == "updated_at"
    (row,) = store.read(orders).to_pylist()
    assert row["price"] == Decimal("12.34") and row["raw"] == b"\x00\xff"
    assert row["updated_at"] == datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert row["day"] == date(2024, 1, 2)
    new_id = "00000000-0000-0000-0000-000000000002"
    batch = pa.table({"id": [new_id], "venue": ["y"], "price": [Decimal("1.50")]},
                     schema=pa.schema([orders.schema.field(n) for n in ("id", "venue", "price")]))
    assert store.upsert(orders, batch) == 1  # text staged, cast to uuid and numeric
    assert store.read(orders, where={"id": new_id}).column("price").to_pylist() == [
        Decimal("1.50")]


def test_a_too_long_value_is_an_error_not_cut_down_to_another_key(
        store: PostgresStore, pg_url: str) -> None:
    with admin(pg_url) as conn:
        conn.execute("CREATE SCHEMA data")
        conn.execute("CREATE TABLE data.codes (id varchar(5) PRIMARY KEY, name varchar(3))")
        conn.execute("INSERT INTO data.codes VALUES ('abcde', 'old')")
    codes = store.describe("codes")
    assert codes is not None
    long_key = pa.table({"id": ["abcdeXYZ"], "name": ["new"]}, schema=codes.schema)
    with pytest.raises(StoreError, match="too long"):
        store.upsert(codes, long_key)
    assert store.read(codes).to_pylist() == [{"id": "abcde", "name": "old"}]


def test_foreign_tables_candlekeep_cannot_use_are_named_not_fatal(
        store: PostgresStore, pg_url: str) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 3)))
    with admin(pg_url) as conn:
        conn.execute('CREATE TABLE data."Orders" ("orderId" int PRIMARY KEY)')
        conn.execute('INSERT INTO data."Orders" VALUES (1)')
        conn.execute("CREATE TABLE data.forever (id int PRIMARY KEY, ts timestamptz)")
        conn.execute("INSERT INTO data.forever VALUES (1, 'infinity')")
    with pytest.raises(StoreError, match="'Orders' cannot be used as a dataset"):
        store.describe("Orders")
    stats = {s.name: s for s in store.stats()}  # one odd table never hides the others
    assert stats["Orders"].rows == 1 and stats["Orders"].newest_ms is None
    assert stats["forever"].newest_ms is None
    assert stats["candles"].newest_ms == T0 + 2 * MINUTE_MS
    forever = store.describe("forever")
    assert forever is not None
    with pytest.raises(StoreError, match="table forever holds a value"):
        store.read(forever)


def test_stats_estimate_big_tables_and_find_the_newest_per_series(
        store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store.upsert_candles(candles(BTC, grid(BTC, T0, 3000)))
    store.upsert_candles(candles(ETH, grid(ETH, T0 + MINUTE_MS, 5000)))
    marks = Dataset("marks", pa.schema([pa.field("id", pa.int64(), nullable=False)]), ("id",))
    store.upsert(marks, pa.table({"id": [1, 2]}))
    exact = {s.name: s for s in store.stats()}
    assert (exact["candles"].rows, exact["candles"].exact) == (8000, True)
    assert exact["candles"].newest_ms == T0 + 5000 * MINUTE_MS
    assert (exact["marks"].rows, exact["marks"].newest_ms) == (2, None)
    with admin(pg_url) as conn:
        conn.execute("ANALYZE data.candles")
    monkeypatch.setattr(pg_catalog, "EXACT_BELOW", 1000)
    estimated = {s.name: s for s in store.stats()}["candles"]
    assert not estimated.exact and 4000 <= estimated.rows <= 16000
    assert estimated.newest_ms == T0 + 5000 * MINUTE_MS


def test_gaps_over_several_timeframes_and_a_window(store: PostgresStore) -> None:
    h1 = SeriesKey("binance", "BTC/USDT", "1h")
    w1 = SeriesKey("okx", "BTC/USDT", "1w")
    m1 = grid(BTC, T0, 600)
    hours = grid(h1, T0, 300)
    weeks = grid(w1, T0, 40)
    store.upsert_candles(candles(BTC, without(m1, 3, 300, 301)))
    store.upsert_candles(candles(h1, without(hours, 100)))
    store.upsert_candles(candles(w1, without(weeks, 20, 21)))
    assert gaps(store.find_gaps(None, m1[200], weeks[30])) == [
        ("binance", "BTC/USDT", "1h", hours[100], hours[100]),
        ("binance", "BTC/USDT", "1m", m1[300], m1[301]),
        ("okx", "BTC/USDT", "1w", weeks[20], weeks[21]),
    ]


@pytest.mark.parametrize("holes", [
    [255, 256],  # one run across a bucket edge
    list(range(256, 512)),  # exactly one bucket, so no candle in it
    [*range(250, 300), 400],  # a crossing run, then a single
    [3, 9, 10, 300, 302, 304],  # several holes per bucket: re-read
    list(range(0, 700, 2)),  # every other candle
], ids=["edge", "whole-bucket", "crossing", "scattered", "alternate"])
def test_gaps_at_bucket_edges_match_the_reference(store: PostgresStore,
                                                  holes: list[int]) -> None:
    start = T0 // (256 * MINUTE_MS) * (256 * MINUTE_MS)  # slot 0 of a bucket
    ts = grid(BTC, start, 1024)
    kept = without(ts, *holes)
    store.upsert_candles(candles(BTC, kept))
    stored = {BTC: kept}
    assert gaps(store.find_gaps()) == reference_gaps(stored, None, None)
    for lo, hi in ((1, 1023), (255, 257), (256, 512), (260, 301), (5, 6), (511, 1000)):
        assert gaps(store.find_gaps(BTC, ts[lo], ts[hi])) == reference_gaps(
            stored, ts[lo], ts[hi]), (lo, hi)
        assert gaps(store.find_gaps(None, ts[lo] + 7, ts[hi] - 7)) == reference_gaps(
            stored, ts[lo] + 7, ts[hi] - 7), (lo, hi)


# --------------------------------------------------------------------------- privileges


@pytest.fixture
def restricted(pg_url: str) -> Iterator[tuple[str, str]]:
    """A login role with CONNECT only, and a URL that logs in as it; dropped afterwards."""
    role = f"ck_role_{secrets.token_hex(4)}"
    db = pg_url.rsplit("/", 1)[1]
    with admin(pg_url) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {role}')
    base, _, rest = pg_url.partition("://")
    yield role, f"{base}://{role}@{rest.split('@', 1)[1]}"
    with admin(pg_url) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE usename = '{role}'")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_check_names_each_missing_privilege_and_its_fix(
        store: PostgresStore, pg_url: str, restricted: tuple[str, str]) -> None:
    role, url = restricted
    db = pg_url.rsplit("/", 1)[1]
    limited = PostgresStore("limited", url, "data")
    limited.check()  # reachable
    with pytest.raises(StoreError, match=r"may not create it: CREATE SCHEMA data AUTHORIZATION"):
        limited.check("candles", write=True)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 3)))
    with pytest.raises(StoreError, match=f"GRANT USAGE ON SCHEMA data TO {role}"):
        limited.check("candles")
    with admin(pg_url) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA data TO {role}")
    with pytest.raises(StoreError, match=r"lacks SELECT on data\.candles: GRANT SELECT"):
        limited.check("candles")
    with admin(pg_url) as conn:
        conn.execute(f"GRANT SELECT ON data.candles TO {role}")
    limited.check("candles")
    assert limited.read_candles(BTC).num_rows == 3
    with pytest.raises(StoreError, match=r"lacks INSERT, UPDATE on data\.candles"):
        limited.check("candles", write=True)
    with pytest.raises(StoreError, match="permission denied"):
        limited.upsert_candles(candles(BTC, grid(BTC, T0, 3), price=9.0))
    with pytest.raises(StoreError, match="may not create it: GRANT CREATE ON SCHEMA data"):
        limited.check("fills", write=True)
    with admin(pg_url) as conn:
        conn.execute(f"GRANT INSERT, UPDATE ON data.candles TO {role}")
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{db}" FROM PUBLIC')
    with pytest.raises(StoreError, match=f"GRANT TEMPORARY ON DATABASE {db} TO {role}"):
        limited.check("candles", write=True)
    with admin(pg_url) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{db}" TO {role}')
    limited.check("candles", write=True)
    limited.upsert_candles(candles(BTC, grid(BTC, T0, 3), price=9.0))
    assert store.read_candles(BTC).column("open").to_pylist() == [9.0] * 3
    limited.close()


# --------------------------------------------------------------------------- connections


def test_unreachable_server_names_store_host_and_key_not_password() -> None:
    store = PostgresStore("prod", "postgresql://bob:s3cret-pw@127.0.0.1:1/db")
    with pytest.raises(StoreError) as info:
        store.spans()
    text = str(info.value)
    assert "store prod" in text and "127.0.0.1:1" in text and "stores.prod.dsn" in text
    assert "s3cret-pw" not in text and "s3cret-pw" not in repr(store)


def test_unknown_database_and_unknown_user_name_the_dsn(pg_url: str) -> None:
    server = pg_url.split("@", 1)[1].rsplit("/", 1)[0]
    no_db = PostgresStore("prod", f"postgresql://postgres:s3cret-pw@{server}/no_such_db_ck")
    with pytest.raises(StoreError, match=r"does not exist.*stores\.prod\.dsn") as info:
        no_db.check()
    assert "s3cret-pw" not in str(info.value)
    db = pg_url.rsplit("/", 1)[1]
    no_user = PostgresStore("prod", f"postgresql://nobody_ck:s3cret-pw@{server}/{db}")
    with pytest.raises(StoreError, match=r"cannot log in|nobody_ck") as info:
        no_user.check()
    assert "stores.prod.dsn" in str(info.value) and "s3cret-pw" not in str(info.value)


def test_a_malformed_dsn_is_rejected_without_echoing_it() -> None:
    with pytest.raises(StoreError, match=r"stores\.prod\.dsn is not a valid") as info:
        PostgresStore("prod", "postgresql://bob:s3cret-pw@host:notaport/db?bogus_option=1")
    assert "s3cret-pw" not in str(info.value)
