"""Upsert cost of DuckDBStore against a plain INSERT of the same Arrow table.

Target (issue): 1M new candles (10 series) through ``DuckDBStore.upsert_candles`` in at most
twice the time of ``INSERT INTO t SELECT * FROM arrow`` into a table without keys, measured in
the same run. Also measured, because they are the upserts that actually replace rows: the last
100 candles of every series again, the whole batch again, the next 1M appended to a store that
already holds the first, a one-candle-per-series tick (with the DuckDB instance opened for
the call, and kept open), and the batch with its rows interleaved by time (de-dup path).

Both sides open their own connection and close it (which checkpoints), so both pay the same
fixed costs. Run: ``python bench/upsert.py [--series 10] [--per-series 100000]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.stores import duckdb_store
from candlekeep.stores.duckdb_store import DuckDBStore
from common import candle_batch, timed

KEY = "source, symbol, timeframe, ts"


def tail(batch: pa.Table, series: int, per_series: int, count: int) -> pa.Table:
    """The last ``count`` candles of each series, with new values (a re-fetch)."""
    ends = (np.arange(series) + 1) * per_series
    idx = np.concatenate([np.arange(end - count, end) for end in ends])
    out = batch.take(pa.array(idx))
    return out.set_column(
        out.schema.get_field_index("close"),
        CANDLE_SCHEMA.field("close"),
        pa.array(np.full(len(idx), 42.0)),
    )


def fresh_plain(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(duckdb_store._DDL)
    con.close()


def fresh_store(path: Path, **kwargs: float) -> DuckDBStore:
    store = DuckDBStore("bench", path, **kwargs)
    with store._db.cursor(write=True, timeout_s=10, keep_alive_s=0):
        pass  # creates the table, outside the timing
    return store


def plain_insert(path: Path, batch: pa.Table) -> None:
    con = duckdb.connect(str(path))
    con.register("batch", batch)
    con.execute("INSERT INTO candles SELECT * FROM batch")
    con.close()


def pk_upsert(path: Path, batch: pa.Table) -> None:
    con = duckdb.connect(str(path))
    con.register("batch", batch)
    cols = [c for c in CANDLE_SCHEMA.names if c not in ("source", "symbol", "timeframe", "ts")]
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
    con.execute(f"INSERT INTO candles SELECT * FROM batch ON CONFLICT DO UPDATE SET {sets}")
    con.close()


def run(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    batch = candle_batch(args.series, args.per_series)
    following = candle_batch(args.series, args.per_series, first_index=args.per_series, seed=1)
    last100 = tail(batch, args.series, args.per_series, min(100, args.per_series))
    tick = candle_batch(args.series, 1, first_index=2 * args.per_series, seed=2)
    next_tick = candle_batch(args.series, 1, first_index=2 * args.per_series + 1, seed=3)
    # the same candles ordered by time across series: not provably duplicate-free without
    # hashing the keys, so this takes the de-duplicating path
    ts = batch.column("ts").cast(pa.int64()).to_numpy()
    shuffled = batch.take(pa.array(np.argsort(ts, kind="stable")))
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for rep in range(args.repeat):
        plain = work / f"plain{rep}.duckdb"
        fresh_plain(plain)
        store = fresh_store(work / f"store{rep}.duckdb")
        pair: list[tuple[str, Callable[[], object]]] = [
            ("plain INSERT, no key (baseline)", partial(plain_insert, plain, batch)),
            ("store upsert, new candles", partial(store.upsert_candles, batch)),
        ]
        for name, fn in pair if rep % 2 == 0 else reversed(pair):  # neither always goes first
            add(name, timed(fn))
        add("  again: last 100 per series", timed(partial(store.upsert_candles, last100)))
        add("  again: whole batch", timed(partial(store.upsert_candles, batch)))
        add("  append next batch", timed(partial(store.upsert_candles, following)))
        add("  tick: 1 new candle per series", timed(partial(store.upsert_candles, tick)))
        kept = DuckDBStore("bench-kept", store.path, keep_alive_s=60)
        with kept._db.cursor(write=True, timeout_s=10, keep_alive_s=60):
            pass  # opens the shared instance read-write and keeps it
        add("  tick, instance kept open", timed(partial(kept.upsert_candles, next_tick)))
        kept.close()
        mixed = fresh_store(work / f"interleaved{rep}.duckdb")
        add("new candles, rows interleaved by time", timed(partial(mixed.upsert_candles, shuffled)))
        expected = 2 * batch.num_rows + 2 * args.series
        assert sum(s.count for s in store.spans()) == expected, "upsert lost or doubled rows"

        if args.with_pk:
            pk = work / f"pk{rep}.duckdb"
            con = duckdb.connect(str(pk))
            con.execute(duckdb_store._DDL.replace("\n)", ",\n PRIMARY KEY (" + KEY + ")\n)"))
            con.close()
            add("PRIMARY KEY + ON CONFLICT (reference)", timed(partial(pk_upsert, pk, batch)))
    return times


def report(times: dict[str, list[float]], rows: int) -> None:
    base = statistics.median(times["plain INSERT, no key (baseline)"])
    print(f"{'case':42s} {'median':>10s} {'min':>10s} {'x baseline':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:42s} {med * 1000:8.0f}ms {min(values) * 1000:8.0f}ms {med / base:10.2f}x")
    ratio = statistics.median(times["store upsert, new candles"]) / base
    verdict = "meets" if ratio <= 2.0 else "MISSES"
    print(f"\n{rows:,} new candles: upsert/plain = {ratio:.2f}x ({verdict} the 2x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--per-series", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--with-pk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a PRIMARY KEY upsert, for reference",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="candlekeep-bench-") as tmp:
        times = run(args, Path(tmp))
    report(times, args.series * args.per_series)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
