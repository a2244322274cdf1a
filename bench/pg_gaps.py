"""Gap scan of PostgresStore against a GROUP BY series count over the same table.

Target (issue): ``find_gaps`` over 10M candles (a few series with random holes) in at most
three times ``SELECT source, symbol, timeframe, count(*) ... GROUP BY`` measured in the same
run, alternating which goes first, in a throw-away database (``CANDLEKEEP_BENCH_PG``, default
postgresql://postgres@127.0.0.1:5432/test, is the admin URL). The table is the store's own,
filled by COPY and vacuumed (as autovacuum leaves it). The store's answer is checked against
the holes the generator punched; a plain lag() window is shown for reference.

Run: ``python bench/pg_gaps.py [--rows 10000000] [--series 10] [--missing 0.0005]``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import psycopg
import pyarrow as pa

from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.stores.pg_copy import copy_chunks
from candlekeep.stores.postgres_store import PostgresStore
from common import T0, candle_batch, timed
from pg_common import throwaway_database

COUNT_SQL = "SELECT source, symbol, timeframe, count(*) FROM candles GROUP BY 1, 2, 3"
LAG_SQL = """
SELECT count(*) FROM (
    SELECT ts - lag(ts) OVER (PARTITION BY source, symbol, timeframe ORDER BY ts) AS step
    FROM candles) q
WHERE step > interval '1 minute'
"""

Gap = tuple[str, str, str, int, int]


def holes(rng: np.random.Generator, n: int, missing: float) -> np.ndarray:
    """A keep-mask of ``n`` candles with about ``missing`` of them punched out: mostly single
    candles, some short runs, the odd hour-long outage."""
    keep = np.ones(n, dtype=bool)
    lengths = rng.choice([1, 1, 1, 1, 2, 3, 5, 8, 60], size=max(1, round(n * missing / 3)))
    starts = rng.integers(1, n - 61, size=len(lengths))
    for start, length in zip(starts, lengths, strict=True):
        keep[start:start + length] = False
    return keep


def expected_gaps(keep: np.ndarray, series: int) -> list[Gap]:
    out: list[Gap] = []
    for s in range(series):
        idx = np.flatnonzero(keep[s])
        jumps = np.flatnonzero(np.diff(idx) > 1)
        out += [("binance", f"SYM{s:03d}/USDT", "1m", int(T0 + (idx[j] + 1) * MINUTE_MS),
                 int(T0 + (idx[j + 1] - 1) * MINUTE_MS)) for j in jumps]
    return sorted(out)


def load(url: str, store: PostgresStore, batch: pa.Table) -> None:
    store.upsert_candles(batch.slice(0, 1))  # the store creates its table and indexes
    names = ", ".join(CANDLE_SCHEMA.names)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(
                f"COPY candles ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in copy_chunks(batch.slice(1)):
                copy.write(piece)
        conn.execute("VACUUM ANALYZE candles")


def as_tuples(table: pa.Table) -> list[Gap]:
    d = table.to_pydict()
    start = table.column("gap_start").cast(pa.int64()).to_pylist()
    end = table.column("gap_end").cast(pa.int64()).to_pylist()
    return list(zip(d["source"], d["symbol"], d["timeframe"], start, end, strict=True))


def run(args: argparse.Namespace, url: str) -> tuple[dict[str, list[float]], int, int]:
    per_series = args.rows // args.series
    rng = np.random.default_rng(args.seed)
    keep = np.stack([holes(rng, per_series, args.missing) for _ in range(args.series)])
    batch = candle_batch(args.series, per_series, keep=keep)
    expected = expected_gaps(keep, args.series)
    store = PostgresStore("bench", url)
    load(url, store, batch)
    rows = batch.num_rows
    del batch
    assert as_tuples(store.find_gaps()) == expected, "find_gaps disagrees with the generator"

    times: dict[str, list[float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")  # as the store's sessions run

        def count() -> None:
            conn.execute(COUNT_SQL).fetchall()

        for rep in range(args.repeat):
            cases = [("GROUP BY count (baseline)", count), ("store.find_gaps()", store.find_gaps)]
            for name, fn in cases if rep % 2 == 0 else reversed(cases):
                times.setdefault(name, []).append(timed(fn))
        times["lag() window (reference)"] = [
            timed(lambda: conn.execute(LAG_SQL).fetchall()) for _ in range(args.lag_repeat)]
    store.close()
    return times, rows, len(expected)


def report(times: dict[str, list[float]], rows: int, gaps: int) -> None:
    print(f"{rows:,} candles, {gaps:,} gaps (answer checked against the generator)\n")
    base = statistics.median(times["GROUP BY count (baseline)"])
    print(f"{'case':30s} {'median':>9s} {'min':>9s} {'x baseline':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:30s} {med * 1000:7.0f}ms {min(values) * 1000:7.0f}ms {med / base:10.2f}x")
    ratio = statistics.median(times["store.find_gaps()"]) / base
    verdict = "meets" if ratio <= 3.0 else "MISSES"
    print(f"\nfind_gaps/count = {ratio:.2f}x ({verdict} the 3x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--missing", type=float, default=0.0005, help="fraction of candles")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lag-repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with throwaway_database() as url:
        times, rows, gaps = run(args, url)
    report(times, rows, gaps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
