"""Gap scan of DuckDBStore against a GROUP BY series count over the same table.

Target (issue): ``find_gaps`` over 10M candles in 100 series with ~0.05% missing in at most
twice the time of ``SELECT source, symbol, timeframe, count(*) ... GROUP BY ALL`` measured in
the same run (a plain LAG window is shown for reference). Times are given cold (each call
opens and closes its connection, as the store does by default) and warm (the DuckDB instance
already open). The store's answer is checked against the holes the generator punched.

Run: ``python bench/gaps.py [--series 100] [--per-series 100000] [--missing 0.0005]``.
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

from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.stores import duckdb_store
from candlekeep.stores.duckdb_store import DuckDBStore
from common import timed

T0 = 1_600_000_000_000 // 604_800_000 * 604_800_000  # on every grid, the weekly one included
COUNT_SQL = "SELECT source, symbol, timeframe, count(*) FROM candles GROUP BY ALL"
LAG_SQL = """
SELECT source, symbol, timeframe, prev, ts FROM (
    SELECT source, symbol, timeframe, ts,
           lag(ts) OVER (PARTITION BY source, symbol, timeframe ORDER BY ts) AS prev
    FROM candles)
WHERE ts - prev > INTERVAL 1 MINUTE
"""

Gap = tuple[str, str, str, int, int]


def holes(rng: np.random.Generator, n: int, missing: float, pattern: str) -> np.ndarray:
    """A keep-mask of ``n`` candles with about ``missing`` of them punched out. Lengths:
    single candles (no trades), short runs, and the odd hour-long outage."""
    keep = np.ones(n, dtype=bool)
    target = round(n * missing)
    if pattern == "singles":
        lengths = np.ones(target, np.int64)
    else:
        lengths = rng.choice([1, 1, 1, 2, 3, 4, 5, 8, 13, 60], size=max(1, target // 3))
    removed = 0
    for length in lengths:
        if removed >= target:
            break
        start = int(rng.integers(1, max(2, n - int(length) - 1)))
        keep[start : start + int(length)] = False
        removed += int(length)
    keep[0] = keep[-1] = True
    return keep


def make_table(args: argparse.Namespace) -> tuple[pa.Table, list[Gap]]:
    rng = np.random.default_rng(args.seed)
    timeframes = args.timeframes.split(",")
    sources = [f"exchange{i}" for i in range(args.sources)]
    parts: list[tuple[int, str, str, np.ndarray]] = []
    expected: list[Gap] = []
    for s in range(args.series):
        source, tf_name = sources[s % len(sources)], timeframes[s % len(timeframes)]
        tf = parse_timeframe(tf_name)
        idx = np.flatnonzero(holes(rng, args.per_series, args.missing, args.pattern))
        ts = tf.ceil(T0) + idx * tf.ms
        symbol = f"SYM{s:03d}/USDT"
        parts.append((s, source, tf_name, ts))
        jumps = np.flatnonzero(np.diff(idx) > 1)
        expected += [
            (source, symbol, tf_name, int(ts[j] + tf.ms), int(ts[j + 1] - tf.ms)) for j in jumps
        ]
    return _assemble(parts, args.layout, rng), sorted(expected)


def _assemble(
    parts: list[tuple[int, str, str, np.ndarray]], layout: str, rng: np.random.Generator
) -> pa.Table:
    lengths = np.array([len(p[3]) for p in parts])
    series_of_row = np.repeat(np.arange(len(parts)), lengths)
    ts = np.concatenate([p[3] for p in parts])
    if layout == "time":  # live ingestion appends every series minute by minute
        order = np.lexsort((series_of_row, ts))
        series_of_row, ts = series_of_row[order], ts[order]
    n = len(ts)
    take = pa.array(series_of_row)
    close = 100 + rng.standard_normal(n).cumsum() * 0.01
    return pa.table(
        {
            "source": pa.array([p[1] for p in parts]).take(take),
            "symbol": pa.array([f"SYM{p[0]:03d}/USDT" for p in parts]).take(take),
            "timeframe": pa.array([p[2] for p in parts]).take(take),
            "ts": pa.array(ts).cast(TS_TYPE),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.ones(n),
            "quote_volume": np.ones(n),
            "trades": np.ones(n, np.int64),
            "ingested_at": pa.array(ts).cast(TS_TYPE),
        },
        schema=CANDLE_SCHEMA,
    )


def load(path: Path, table: pa.Table) -> None:
    """The store's own table, filled by a plain INSERT so the row layout is the one asked for."""
    con = duckdb.connect(str(path))
    con.execute(duckdb_store._DDL)
    con.register("t", table)
    con.execute("INSERT INTO candles SELECT * FROM t")
    con.close()


def as_tuples(table: pa.Table) -> list[Gap]:
    d = table.to_pydict()
    start = table.column("gap_start").cast(pa.int64()).to_pylist()
    end = table.column("gap_end").cast(pa.int64()).to_pylist()
    return list(zip(d["source"], d["symbol"], d["timeframe"], start, end, strict=True))


def cold_count(path: Path) -> None:
    con = duckdb.connect(str(path), read_only=True)
    con.sql(COUNT_SQL).to_arrow_table()
    con.close()


def run(args: argparse.Namespace, path: Path, expected: list[Gap]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    cold = DuckDBStore("bench", path)
    assert as_tuples(cold.find_gaps()) == expected, "find_gaps disagrees with the generator"
    for rep in range(args.repeat):
        pair: list[tuple[str, Callable[[], object]]] = [
            ("cold: GROUP BY count (baseline)", partial(cold_count, path)),
            ("cold: store.find_gaps()", cold.find_gaps),
        ]
        for name, fn in pair if rep % 2 == 0 else reversed(pair):
            add(name, timed(fn))

    warm = DuckDBStore("bench", path, keep_alive_s=3600)
    warm.spans(series=None)  # opens the instance
    con = duckdb.connect(str(path), read_only=True)  # same instance, same mode
    for _ in range(args.repeat):
        add("warm: GROUP BY count (baseline)", timed(lambda: con.sql(COUNT_SQL).to_arrow_table()))
        add("warm: store.find_gaps()", timed(warm.find_gaps))
    for _ in range(args.lag_repeat):
        add("warm: LAG window (reference)", timed(lambda: con.sql(LAG_SQL).to_arrow_table()))
    con.close()
    warm.close()
    return times


def report(times: dict[str, list[float]], rows: int, gaps: int) -> None:
    print(f"{rows:,} candles, {gaps:,} gaps (answer checked against the generator)\n")
    print(f"{'case':36s} {'median':>9s} {'min':>9s} {'x baseline':>11s}")
    for name, values in times.items():
        base = statistics.median(times[f"{name.split(':')[0]}: GROUP BY count (baseline)"])
        med = statistics.median(values)
        print(f"{name:36s} {med * 1000:7.0f}ms {min(values) * 1000:7.0f}ms {med / base:10.2f}x")
    print()
    for mode in ("cold", "warm"):
        ratio = statistics.median(times[f"{mode}: store.find_gaps()"]) / statistics.median(
            times[f"{mode}: GROUP BY count (baseline)"]
        )
        verdict = "meets" if ratio <= 2.0 else "MISSES"
        print(f"{mode}: find_gaps/count = {ratio:.2f}x ({verdict} the 2x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--per-series", type=int, default=100_000)
    parser.add_argument("--missing", type=float, default=0.0005, help="fraction of candles")
    parser.add_argument("--pattern", choices=["mixed", "singles"], default="mixed")
    parser.add_argument(
        "--layout",
        choices=["series", "time"],
        default="series",
        help="rows grouped by series (backfill) or interleaved by time (live)",
    )
    parser.add_argument("--timeframes", default="1m", help="comma list, given to series in turn")
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--lag-repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    table, expected = make_table(args)
    with tempfile.TemporaryDirectory(prefix="candlekeep-bench-") as tmp:
        path = Path(tmp) / "gaps.duckdb"
        load(path, table)
        rows = table.num_rows
        del table
        times = run(args, path, expected)
    report(times, rows, len(expected))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
