"""The ``sync`` job between real stores of every type: full and incremental copies, the
inclusive cursor boundary, pages of one cursor value, resuming after a failure, preflight
errors, cursor choice and generic datasets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.datasets import CANDLES, Dataset, register
from candlekeep.core.errors import ConfigError
from candlekeep.jobs.base import JobResult
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.jobs.table_sync import SyncParams
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.stores.base import Store
from tests.jobs.conftest import NOW
from tests.stores.candle_data import BTC, ETH, T0, candles, grid
from tests.stores.conftest import store_config

S = 1000
TS = pa.timestamp("ms", tz="UTC")

TRADES = Dataset("sync_trades", pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("price", pa.float64()),
    pa.field("note", pa.string()),
    pa.field("ingested_at", TS, nullable=False),
]), ("id",), time="ingested_at")

QUOTES = register(Dataset("sync_quotes", pa.schema([
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("ts", TS, nullable=False),
    pa.field("bid", pa.float64()),
    pa.field("revised_at", TS, nullable=False),
]), ("symbol", "ts"), version="revised_at", time="ts"))

LEDGER = Dataset("sync_ledger", pa.schema([
    pa.field("id", pa.int64(), nullable=False), pa.field("seq", pa.int64()),
    pa.field("ingested_at", TS)]), ("id",))


def ledger(ids: Sequence[int]) -> pa.Table:
    return pa.table({"id": list(ids), "seq": list(ids), "ingested_at": [T0] * len(ids)},
                    schema=LEDGER.schema)


TICKS = register(Dataset("sync_ticks", pa.schema([
    pa.field("venue", pa.string(), nullable=False), pa.field("seq", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False)]), ("venue", "seq")))
"""Microsecond times: a registered dataset keeps them (a described one is read in ms)."""

PAIRS = [("duckdb", "duckdb"), ("duckdb", "postgresql"), ("postgresql", "duckdb"),
         ("postgresql", "clickhouse"), ("clickhouse", "clickhouse"), ("clickhouse", "duckdb")]
"""(source, target) store types; every test of the ``sync`` fixture runs on each."""


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


# --------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Sync:
    rt: Runtime
    kinds: tuple[str, str]

    @property
    def src(self) -> Store:
        return self.rt.store("src")

    @property
    def dst(self) -> Store:
        return self.rt.store("dst")

    async def run(self, tables: Sequence[Any], *, dry_run: bool = False,
                  **params: Any) -> tuple[JobResult, str | None]:
        """One attempt of job ``sync_md``, through the run path as any job runs."""
        raw = {"from": "src", "to": "dst", "tables": list(tables), **params}
        spec = adhoc_spec("sync", build_params("sync", raw), name="sync_md")
        attempt = await execute_attempt(self.rt, spec, asyncio.Event(), dry_run=dry_run)
        return attempt.result or JobResult(), attempt.error

    async def ok(self, tables: Sequence[Any], **params: Any) -> JobResult:
        res, error = await self.run(tables, **params)
        assert error is None and res.ok, (error, res.errors)
        return res


SyncFactory = Callable[..., Sync]


@pytest.fixture
async def make_sync(tmp_path: Path, request: pytest.FixtureRequest
                    ) -> AsyncIterator[SyncFactory]:
    made: list[Runtime] = []

    def factory(src_kind: str, dst_kind: str, dst: dict[str, Any] | None = None) -> Sync:
        """Two new stores; ``dst``: the target's config instead of a new store's."""
        raw = {"data_dir": str(tmp_path / "data"),
               "stores": {"src": store_config(src_kind, tmp_path, request),
                          "dst": dst or store_config(dst_kind, tmp_path, request)}}
        cfg = parse_config(raw, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=FakeClock(NOW, autoadvance=True))
        made.append(rt)
        return Sync(rt, (src_kind, dst_kind))

    yield factory
    for rt in made:
        await rt.aclose()


@pytest.fixture(params=PAIRS, ids=pair_id)
def sync(request: pytest.FixtureRequest, make_sync: SyncFactory) -> Sync:
    src_kind, dst_kind = request.param
    return make_sync(src_kind, dst_kind)


def trades(ids: Sequence[int], at_ms: Sequence[int] | int, *, price: float = 1.0,
           note: str | None = "n") -> pa.Table:
    at = [at_ms] * len(ids) if isinstance(at_ms, int) else list(at_ms)
    return pa.table({"id": list(ids), "price": [price + i for i in ids],
                     "note": [note] * len(ids), "ingested_at": at}, schema=TRADES.schema)


def content(store: Store, ds: Dataset, name: str | None = None) -> pa.Table:
    """A table's rows in ``ds``'s schema, ordered by key (the target read as the source)."""
    table = store.read(dataclasses.replace(ds, name=name) if name else ds)
    return table.sort_by([(k, "ascending") for k in ds.key])


def same_rows(sync: Sync, ds: Dataset, target: str | None = None) -> None:
    want, got = content(sync.src, ds), content(sync.dst, ds, target)
    assert got.num_rows == want.num_rows
    assert got.equals(want)


# --------------------------------------------------------------------------- copies


async def test_full_copy_then_only_new_rows(sync: Sync,
                                           caplog: pytest.LogCaptureFixture) -> None:
    sync.src.upsert(TRADES, trades(range(250), [T0 + i * S for i in range(250)]))
    with caplog.at_level(logging.INFO, "candlekeep.jobs"):
        first = await sync.ok(["sync_trades"], batch_rows=100)
    assert first.rows_written == 250
    assert first.details["tables"] == {"src.sync_trades → dst.sync_trades": 250}
    assert [r.getMessage() for r in caplog.records if r.name == "candlekeep.jobs.sync_md"] == [
        "sync from=src.sync_trades to=dst.sync_trades rows=250 cursor=ingested_at "
        "position=2023-11-14T00:04:09.000+00:00"]
    same_rows(sync, TRADES)

    sync.src.upsert(TRADES, trades(range(250, 280), [T0 + i * S for i in range(250, 280)]))
    second = await sync.ok(["sync_trades"], batch_rows=100)
    assert second.rows_written == 30
    same_rows(sync, TRADES)
    assert (await sync.ok(["sync_trades"], batch_rows=100)).rows_written == 0


async def test_rows_arriving_later_at_the_boundary_value_are_copied(sync: Sync) -> None:
    last = T0 + 9 * S
    sync.src.upsert(TRADES, trades(range(7), [T0 + i * S for i in range(7)]))
    sync.src.upsert(TRADES, trades(range(7, 10), last, note=None))  # NULL equals NULL here
    assert (await sync.ok(["sync_trades"])).rows_written == 10
    # Written after that run, with the value it ended at: a strict '>' would lose them.
    sync.src.upsert(TRADES, trades([10, 11], last))
    sync.src.upsert(TRADES, trades([8], last, price=50.0))  # a boundary row changed in place
    again = await sync.ok(["sync_trades"])
    assert again.rows_written == 3
    same_rows(sync, TRADES)
    assert content(sync.dst, TRADES).num_rows == 12


async def test_one_cursor_value_filling_pages(sync: Sync) -> None:
    """37 rows share one value with pages of 10, the first page ending inside them: no
    endless loop, none lost, none twice."""
    mid, end = T0 + 20 * S, T0 + 40 * S
    ids = list(range(60))
    at = [T0 + i * S for i in range(8)] + [mid] * 37 + [end] * 15
    sync.src.upsert(TRADES, trades(ids, at))
    assert (await sync.ok(["sync_trades"], batch_rows=10)).rows_written == 60
    same_rows(sync, TRADES)
    # the run ended inside a group bigger than a page: it is read again, and only what is
    # new or changed there is written
    sync.src.upsert(TRADES, trades(range(60, 65), end))
    sync.src.upsert(TRADES, trades(range(65, 70), end + S))
    assert (await sync.ok(["sync_trades"], batch_rows=10)).rows_written == 10
    same_rows(sync, TRADES)


@pytest.mark.parametrize("seed", range(3))
async def test_clusters_gaps_and_groups_of_cursor_values(sync: Sync, seed: int) -> None:
    """Windows over an uneven cursor: dense clusters, long empty stretches, groups of one
    value around page boundaries; every row arrives once, in any page size."""
    rng = random.Random(seed)
    at: list[int] = []
    for _ in range(6):
        base = T0 + rng.randrange(0, 30 * 86_400) * S
        at += [base + rng.randrange(0, rng.choice([1, 5, 600])) * S
               for _ in range(rng.randrange(1, 30))]
    sync.src.upsert(TRADES, trades(range(len(at)), at))
    batch = rng.randrange(6, 17)
    assert (await sync.ok(["sync_trades"], batch_rows=batch)).rows_written == len(at)
    same_rows(sync, TRADES)
    top = max(at)
    later = [top] * 3 + [top + rng.randrange(1, 86_400) * S for _ in range(10)]
    sync.src.upsert(TRADES, trades(range(len(at), len(at) + len(later)), later))
    assert (await sync.ok(["sync_trades"], batch_rows=batch)).rows_written == len(later)
    same_rows(sync, TRADES)


async def test_candles_copy_incrementally_by_ingested_at(sync: Sync) -> None:
    ts = grid(BTC, T0, 500)
    sync.src.upsert_candles(candles(BTC, ts, ingested_at_ms=T0 + 10 * S))
    sync.src.upsert_candles(candles(ETH, ts[:200], ingested_at_ms=T0 + 20 * S))
    assert (await sync.ok(["candles"], batch_rows=128)).rows_written == 700
    # a repair rewrites old candles: a later ingested_at carries them over
    sync.src.upsert_candles(candles(BTC, ts[100:110], price=7.0, ingested_at_ms=T0 + 30 * S))
    assert (await sync.ok(["candles"], batch_rows=128)).rows_written == 10
    for series in (BTC, ETH):
        assert sync.dst.read_candles(series).equals(sync.src.read_candles(series))
    assert sync.dst.describe("candles") == CANDLES


async def test_resume_after_a_failed_write(make_sync: SyncFactory) -> None:
    """A target that refuses one row mid-way: pages before it stay, with their position;
    the next run starts there instead of at the beginning."""
    sync = make_sync("duckdb", "duckdb")
    path = sync.rt.config.stores["dst"].path  # type: ignore[union-attr]
    with duckdb.connect(path) as con:
        con.execute("CREATE TABLE sync_trades (id BIGINT PRIMARY KEY, price DOUBLE "
                    "CHECK (price < 1000), note VARCHAR, ingested_at TIMESTAMPTZ NOT NULL)")
    sync.src.upsert(TRADES, trades(range(100), [T0 + i * S for i in range(100)]))
    sync.src.upsert(TRADES, trades([55], T0 + 55 * S, price=5000.0))
    _, error = await sync.run(["sync_trades"], batch_rows=20)
    assert error is not None and "jobs[sync_md].params.tables[0]" in error
    assert "CHECK" in error or "constraint" in error.lower()
    # pages of 20 write the rows before each page's last value: 19, then 19, then the failure
    assert content(sync.dst, TRADES).column("id").to_pylist() == list(range(38))

    sync.src.upsert(TRADES, trades([55], T0 + 55 * S, price=5.0))
    resumed = await sync.ok(["sync_trades"], batch_rows=20)
    assert resumed.rows_written == 100 - 38
    same_rows(sync, TRADES)


async def test_target_dropped_is_copied_again_from_the_start(sync: Sync) -> None:
    sync.src.upsert(TRADES, trades(range(30), [T0 + i * S for i in range(30)]))
    await sync.ok([{"name": "sync_trades", "target": "copy_a"}])
    # a new target name is another copy: its position starts afresh
    res = await sync.ok([{"name": "sync_trades", "target": "copy_b"}])
    assert res.rows_written == 30
    same_rows(sync, TRADES, "copy_b")


# --------------------------------------------------------------------------- preflight


async def test_missing_source_table_is_named_before_anything_is_copied(sync: Sync) -> None:
    sync.src.upsert(TRADES, trades(range(5), T0))
    _, error = await sync.run(["sync_trades", "no_such_table"])
    assert error is not None
    assert "jobs[sync_md].params.tables[1]" in error and "no_such_table" in error
    assert sync.dst.describe("sync_trades") is None


async def test_missing_privilege_is_named_before_anything_is_copied(
    make_sync: SyncFactory, pg_url: str
) -> None:
    """The target role may write the first table but not create the second: the preflight
    names the second, and the first stays untouched."""
    role = f"ck_sync_{secrets.token_hex(4)}"
    db = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA data")
        admin.execute("CREATE TABLE data.sync_trades (id BIGINT PRIMARY KEY, price DOUBLE "
                      "PRECISION, note TEXT, ingested_at TIMESTAMPTZ NOT NULL)")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO {role}')
        admin.execute(f"GRANT USAGE ON SCHEMA data TO {role}")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE ON data.sync_trades TO {role}")
    base, _, rest = pg_url.partition("://")
    url = f"{base}://{role}@{rest.split('@', 1)[1]}"
    try:
        sync = make_sync("duckdb", "postgresql",
                         dst={"type": "postgresql", "dsn": url, "schema": "data"})
        sync.src.upsert(TRADES, trades(range(5), T0))
        sync.src.upsert(LEDGER, ledger(range(5)))
        _, error = await sync.run(["sync_trades", "sync_ledger"])
        assert error is not None and "jobs[sync_md].params.tables[1]" in error
        assert "GRANT CREATE ON SCHEMA data" in error
        assert content(sync.dst, TRADES).num_rows == 0
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"GRANT CREATE ON SCHEMA data TO {role}")
        assert (await sync.ok(["sync_trades", "sync_ledger"])).rows_written == 10
        await sync.rt.aclose()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          f"WHERE usename = '{role}'")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


async def test_unknown_store_names_the_param(make_sync: SyncFactory) -> None:
    sync = make_sync("duckdb", "duckdb")
    _, error = await sync.run(["sync_trades"], to="nowhere")
    assert error is not None and "jobs[sync_md].params.to" in error and "nowhere" in error


async def test_table_without_a_key_needs_one_configured(make_sync: SyncFactory) -> None:
    sync = make_sync("duckdb", "duckdb")
    path = sync.rt.config.stores["src"].path  # type: ignore[union-attr]
    with duckdb.connect(path) as con:
        con.execute("CREATE TABLE loose (id BIGINT NOT NULL, v DOUBLE, ts TIMESTAMPTZ)")
        con.execute("INSERT INTO loose SELECT i, i * 0.5, make_timestamptz(i * 1000000) "
                    "FROM range(1, 8) t(i)")
    _, error = await sync.run(["loose"])
    assert error is not None and "'loose'" in error and "no key" in error
    assert "key: [column, ...]" in error and "jobs[sync_md].params.tables[0]" in error
    res = await sync.ok([{"name": "loose", "key": ["id"]}])
    assert res.rows_written == 7
    assert sync.dst.describe("loose").key == ("id",)  # type: ignore[union-attr]


async def test_microsecond_cursor_pages_by_whole_milliseconds(sync: Sync) -> None:
    """Bounds are milliseconds: 1000 rows inside one millisecond, in pages of 300, are one
    group to the job even though their microseconds differ."""
    first_us = T0 * 1000
    sync.src.upsert(TICKS, pa.table({
        "venue": ["x"] * 3000, "seq": list(range(3000)),
        "ts": pa.array([first_us + i for i in range(3000)]).cast(TICKS.schema.field("ts").type),
    }, schema=TICKS.schema))
    assert (await sync.ok(["sync_ticks"], batch_rows=300)).rows_written == 3000
    same_rows(sync, TICKS)


async def test_dry_run_checks_and_plans_but_copies_nothing(sync: Sync) -> None:
    sync.src.upsert(TRADES, trades(range(5), T0))
    res, error = await sync.run(["sync_trades"], dry_run=True)
    assert error is None
    assert res.details["plan"] == ["src.sync_trades → dst.sync_trades: by ingested_at from start"]
    assert sync.dst.describe("sync_trades") is None


# --------------------------------------------------------------------------- cursors


async def test_inferred_cursor_is_updated_at_before_ts(sync: Sync) -> None:
    ds = Dataset("sync_orders", pa.schema([
        pa.field("id", pa.int64(), nullable=False), pa.field("ts", TS),
        pa.field("updated_at", TS), pa.field("state", pa.string())]), ("id",))
    sync.src.upsert(ds, pa.table({"id": [1, 2, 3], "ts": [T0, T0 + S, T0 + 2 * S],
                                  "updated_at": [T0, T0 + S, T0 + 2 * S],
                                  "state": ["new"] * 3}, schema=ds.schema))
    await sync.ok(["sync_orders"])
    # an old order changes: its ts stays, its updated_at moves on
    sync.src.upsert(ds, pa.table({"id": [1], "ts": [T0], "updated_at": [T0 + 9 * S],
                                  "state": ["filled"]}, schema=ds.schema))
    assert (await sync.ok(["sync_orders"])).rows_written == 1
    same_rows(sync, ds)


async def test_configured_integer_cursor(sync: Sync) -> None:
    ds = LEDGER
    sync.src.upsert(ds, ledger(range(25)))
    res = await sync.ok([{"name": "sync_ledger", "cursor": "seq"}], batch_rows=10)
    assert res.rows_written == 25
    sync.src.upsert(ds, pa.table({"id": [3], "seq": [99], "ingested_at": [T0]},
                                 schema=ds.schema))
    assert (await sync.ok([{"name": "sync_ledger", "cursor": "seq"}])).rows_written == 1
    same_rows(sync, ds)


async def test_inferred_date_cursor_with_many_rows_a_day(sync: Sync) -> None:
    ds = Dataset("sync_daily", pa.schema([
        pa.field("date", pa.date32(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("volume", pa.float64())]), ("date", "symbol"))
    days = [date(2025, 1, 1) + timedelta(days=d) for d in range(4)]
    syms = [f"S{i:02d}" for i in range(12)]

    def rows(on: list[date], vol: float) -> pa.Table:
        return pa.table({"date": [d for d in on for _ in syms], "symbol": syms * len(on),
                         "volume": [vol] * (len(on) * len(syms))}, schema=ds.schema)

    sync.src.upsert(ds, rows(days, 1.0))
    assert (await sync.ok(["sync_daily"], batch_rows=5)).rows_written == 48
    # the last day fills in later: the same date, new and changed rows
    sync.src.upsert(ds, pa.table({"date": [days[-1]] * 2, "symbol": ["S00", "ZZZ"],
                                  "volume": [2.0, 3.0]}, schema=ds.schema))
    assert (await sync.ok(["sync_daily"], batch_rows=5)).rows_written == 2
    same_rows(sync, ds)


async def test_cursor_errors_name_the_item_key(sync: Sync) -> None:
    ds = Dataset("sync_plain", pa.schema([pa.field("id", pa.int64(), nullable=False),
                                          pa.field("label", pa.string())]), ("id",))
    sync.src.upsert(ds, pa.table({"id": [1], "label": ["a"]}, schema=ds.schema))
    _, error = await sync.run(["sync_plain"])
    assert error is not None and "no cursor column" in error and "cursor: COLUMN" in error
    _, error = await sync.run([{"name": "sync_plain", "cursor": "label"}])
    assert error is not None and "jobs[sync_md].params.tables[0].cursor" in error
    _, error = await sync.run([{"name": "sync_plain", "cursor": "nope"}])
    assert error is not None and "'nope' not in table" in error


# --------------------------------------------------------------------------- datasets


async def test_generic_dataset_keeps_key_version_and_values(sync: Sync) -> None:
    sync.src.upsert(QUOTES, pa.table({
        "symbol": ["A", "A", "B"], "ts": [T0, T0 + S, T0], "bid": [1.0, None, 3.0],
        "revised_at": [T0 + 5 * S, T0 + 6 * S, T0 + 7 * S]}, schema=QUOTES.schema))
    res = await sync.ok([{"name": "sync_quotes", "target": "quotes_copy"}])
    assert res.rows_written == 3
    same_rows(sync, QUOTES, "quotes_copy")
    got = sync.dst.describe("quotes_copy")
    assert got is not None and got.key == QUOTES.key
    if sync.kinds[1] == "clickhouse":  # the one engine that keeps a version column
        assert got.version == "revised_at"


# --------------------------------------------------------------------------- params


def test_params_take_names_or_mappings_and_forbid_unknown_keys() -> None:
    p = build_params("sync", {"from": "a", "to": "b",
                              "tables": ["x", {"name": "y", "target": "z", "key": ["k"]}]})
    assert isinstance(p, SyncParams) and p.from_ == "a" and p.batch_rows == 100_000
    assert [(t.name, t.target_name, t.key) for t in p.tables] == [
        ("x", "x", None), ("y", "z", ("k",))]
    with pytest.raises(ConfigError, match=r"params\.tables\.1\.bogus"):
        build_params("sync", {"from": "a", "to": "b", "tables": ["x", {"name": "y", "bogus": 1}]})
    with pytest.raises(ConfigError, match="onto itself"):
        build_params("sync", {"from": "a", "to": "a", "tables": ["x"]})
    with pytest.raises(ConfigError, match="written by two items"):
        build_params("sync", {"from": "a", "to": "b",
                              "tables": ["x", {"name": "y", "target": "x"}]})


async def test_an_existing_target_with_another_key_is_named_before_anything_is_copied(
        make_sync: SyncFactory) -> None:
    sync = make_sync("duckdb", "duckdb")
    sync.src.upsert(TRADES, trades(range(5), T0))
    sync.src.upsert(LEDGER, ledger(range(5)))
    rekeyed = Dataset(LEDGER.name, pa.schema([f.with_nullable(False) for f in LEDGER.schema]),
                      ("seq",))
    sync.dst.upsert(rekeyed, ledger([99]))
    _, error = await sync.run(["sync_trades", LEDGER.name])
    assert error is not None and "jobs[sync_md].params.tables[1]" in error
    assert "is keyed by (seq), the source by (id)" in error
    assert sync.dst.describe("sync_trades") is None  # nothing half copied
