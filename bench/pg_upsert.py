"""Upsert of PostgresStore against a plain binary COPY of the same rows.

Targets (issue): 1M new candles through ``upsert_candles`` in at most twice the time of a
binary COPY (the same encoder) of the same rows into a table with the same primary key and no
conflict handling; re-upserting the same 1M rows in at most three times that. Measured in the
same run, alternating which goes first, in a throw-away database (``CANDLEKEEP_BENCH_PG``,
default postgresql://postgres@127.0.0.1:5432/test, is the admin URL). Also shown: re-upserting
with every row changed, the INSERT ... ON CONFLICT path the store falls back to, and four
threads writing separate series through a pool of four connections against one.

Run: ``python bench/pg_upsert.py [--rows 1000000] [--series 10] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import psycopg
import pyarrow as pa

from candlekeep.core.datasets import CANDLES
from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE
from candlekeep.stores.pg_copy import copy_chunks
from candlekeep.stores.postgres_store import PostgresStore
from candlekeep.stores.sql import create_table_sql, postgres_type, quote_ident
from common import candle_batch, timed
from pg_common import throwaway_database

BASELINE = "plain binary COPY, same key (baseline)"
NEW = "store upsert, new candles"
SAME = "store upsert again, same rows"


def plain_copy(url: str, table: str, batch: pa.Table) -> float:
    """Seconds to COPY ``batch`` into a new keyed table (its creation untimed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(create_table_sql(CANDLES, quote_ident, postgres_type, table))
        names = ", ".join(CANDLE_SCHEMA.names)
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in copy_chunks(batch):
                copy.write(piece)
        return time.perf_counter() - start


def changed(batch: pa.Table) -> pa.Table:
    """Every row with a new close and a later ingested_at: a re-fetch that changed."""
    out = batch.set_column(batch.schema.get_field_index("close"), CANDLE_SCHEMA.field("close"),
                           pa.array(np.full(batch.num_rows, 42.0)))
    later = pa.array(np.full(batch.num_rows, 1_700_000_000_000, np.int64)).cast(TS_TYPE)
    return out.set_column(out.schema.get_field_index("ingested_at"),
                          CANDLE_SCHEMA.field("ingested_at"), later)


def run(args: argparse.Namespace, url: str) -> dict[str, list[float]]:
    per_series = args.rows // args.series
    batch = candle_batch(args.series, per_series)
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for rep in range(args.repeat):
        store = PostgresStore("bench", url, f"s{rep}")
        cases: list[tuple[str, Callable[[], float]]] = [
            (BASELINE, partial(plain_copy, url, f"plain{rep}", batch)),
            (NEW, partial(timed, store.upsert_candles, batch)),
        ]
        for name, fn in cases if rep % 2 == 0 else reversed(cases):  # neither always first
            add(name, fn())
        add(SAME, timed(store.upsert_candles, batch))
        add("store upsert again, every row changed", timed(store.upsert_candles, changed(batch)))
        assert sum(s.count for s in store.spans()) == batch.num_rows, "lost or doubled rows"
        store.close()

        conflict = PostgresStore("bench", url, f"c{rep}")
        conflict._use_merge = False  # the fallback path, for reference
        add("ON CONFLICT path, new candles (reference)", timed(conflict.upsert_candles, batch))
        add("ON CONFLICT path, same rows (reference)", timed(conflict.upsert_candles, batch))
        conflict.close()

    threads = 4
    pieces = [candle_batch(args.series, per_series // threads, seed=t,
                           first_index=t * per_series) for t in range(threads)]
    for pool_size in (1, threads):
        for rep in range(args.repeat):
            store = PostgresStore("bench", url, f"p{pool_size}_{rep}", pool_size=pool_size)
            store.upsert_candles(pieces[0].slice(0, 1))  # creates the table, untimed
            with ThreadPoolExecutor(threads) as pool:
                add(f"{threads} threads, pool of {pool_size}",
                    timed(lambda p=pool, s=store: list(p.map(s.upsert_candles, pieces))))
            store.close()
    return times


def report(times: dict[str, list[float]], rows: int) -> None:
    base = statistics.median(times[BASELINE])
    print(f"{'case':44s} {'median':>9s} {'min':>9s} {'x baseline':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:44s} {med * 1000:7.0f}ms {min(values) * 1000:7.0f}ms {med / base:10.2f}x")
    print()
    for name, target in ((NEW, 2.0), (SAME, 3.0)):
        ratio = statistics.median(times[name]) / base
        verdict = "meets" if ratio <= target else "MISSES"
        print(f"{rows:,} rows, {name}: {ratio:.2f}x the plain COPY "
              f"({verdict} the {target:g}x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with throwaway_database() as url:
        times = run(args, url)
    report(times, args.rows // args.series * args.series)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
