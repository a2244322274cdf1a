"""Gap scan of ClickHouseStore (embedded chdb) against a GROUP BY series count of the same table.

Target (issue): ``find_gaps`` over 10M candles (100 series, ~0.05% missing) in at most three
times ``SELECT source, symbol, timeframe, count() ... GROUP BY`` measured in the same run,
alternating which goes first, both through clickhouse-connect on one temporary chdb path. The
table is the store's own, filled by its upsert; ``--twice`` writes every candle again with
merges stopped (each key twice: the worst case before merges). The answer is checked against
the holes the generator punched.

Also timed, as the measurements behind the design (exact before merges, FINAL or argMax):
``spans()`` (per-series bitmaps) against spans through FINAL, one series read through FINAL
(``read_candles``) against an argMax GROUP BY, and ``stats()``; ``--full-reads`` adds the
whole table through FINAL and through argMax.

Run: ``python bench/ch_gaps.py [--rows 10000000] [--series 100] [--twice]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from functools import partial

import clickhouse_connect

from candlekeep.core.datasets import CANDLES
from candlekeep.core.series import SeriesKey
from candlekeep.stores.clickhouse_store import ClickHouseStore
from common import timed
from gaps import as_tuples, make_table

BASELINE = "GROUP BY count (baseline)"
GAPS = "store.find_gaps()"
VALUES = [c for c in CANDLES.schema.names if c not in (*CANDLES.key, "ingested_at")]
ARGMAX = ", ".join(f"argMax(c.{v}, c.ingested_at) AS {v}" for v in VALUES)


def run(args: argparse.Namespace, path: str) -> tuple[dict[str, list[float]], int, int]:
    table, expected = make_table(args)
    store = ClickHouseStore("bench", f"chdb://{path}", database="bench")
    client = clickhouse_connect.get_client(
        interface="chdb", path=path, settings={"output_format_arrow_string_as_string": 1})
    store.upsert_candles(table)
    if args.twice:
        client.command("SYSTEM STOP MERGES bench.candles")
        store.upsert_candles(table)
    rows = table.num_rows
    del table
    parts = client.query("SELECT count() FROM system.parts WHERE database = 'bench' "
                         "AND active").result_rows[0][0]
    assert as_tuples(store.find_gaps()) == expected, "find_gaps disagrees with the generator"
    one = store.spans()[len(expected) % args.series].series
    where = (f"source = '{one.source}' AND symbol = '{one.symbol}' "
             f"AND timeframe = '{one.timeframe}'")
    sql = {
        BASELINE: "SELECT source, symbol, timeframe, count() FROM bench.candles "
                  "GROUP BY source, symbol, timeframe",
        "spans through FINAL (reference)": "SELECT source, symbol, timeframe, min(ts), "
        "max(ts), count() FROM bench.candles FINAL GROUP BY source, symbol, timeframe",
        "one series: argMax GROUP BY (reference)": f"SELECT source, symbol, timeframe, ts, "
        f"{ARGMAX}, max(c.ingested_at) AS ingested_at FROM bench.candles AS c WHERE {where} "
        "GROUP BY source, symbol, timeframe, ts ORDER BY ts",
        "all rows: FINAL": "SELECT * FROM bench.candles FINAL",
        "all rows: argMax GROUP BY": f"SELECT source, symbol, timeframe, ts, {ARGMAX}, "
        "max(c.ingested_at) AS ingested_at FROM bench.candles AS c "
        "GROUP BY source, symbol, timeframe, ts",
    }
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for rep in range(args.repeat):
        pair: list[tuple[str, Callable[[], object]]] = [
            (BASELINE, partial(client.query_arrow, sql[BASELINE])),
            (GAPS, store.find_gaps),
        ]
        for name, fn in pair if rep % 2 == 0 else reversed(pair):
            add(name, timed(fn))
        if rep < 3:
            add("store.spans()", timed(store.spans))
            add("spans through FINAL (reference)",
                timed(partial(client.query_arrow, sql["spans through FINAL (reference)"])))
            add("one series: read_candles (FINAL)",
                timed(partial(store.read_candles, SeriesKey(*one))))
            add("one series: argMax GROUP BY (reference)", timed(partial(
                client.query_arrow, sql["one series: argMax GROUP BY (reference)"])))
            add("store.stats()", timed(store.stats))
    if args.full_reads:
        for name in ("all rows: FINAL", "all rows: argMax GROUP BY"):
            add(name, timed(partial(client.query_arrow, sql[name])))
    client.close()
    store.close()
    return times, rows, int(parts)


def report(times: dict[str, list[float]], rows: int, parts: int, twice: bool) -> None:
    print(f"{rows:,} candles{' written twice' if twice else ''}, {parts} active parts "
          "(answer checked against the generator)\n")
    base = statistics.median(times[BASELINE])
    print(f"{'case':42s} {'median':>9s} {'min':>9s} {'x baseline':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:42s} {med * 1000:7.0f}ms {min(values) * 1000:7.0f}ms {med / base:10.2f}x")
    ratio = statistics.median(times[GAPS]) / base
    best = min(times[GAPS]) / min(times[BASELINE])
    verdict = "meets" if ratio <= 3.0 else "MISSES"
    print(f"\nfind_gaps/count = {ratio:.2f}x ({verdict} the 3x target; best of each: {best:.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--missing", type=float, default=0.0005, help="fraction of candles")
    parser.add_argument("--pattern", choices=["mixed", "singles"], default="mixed")
    parser.add_argument("--timeframes", default="1m", help="comma list, given to series in turn")
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--twice", action="store_true", help="every candle written twice")
    parser.add_argument("--full-reads", action="store_true", help="also read the whole table")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.per_series = args.rows // args.series
    args.layout = "series"
    with tempfile.TemporaryDirectory(prefix="candlekeep-bench-chdb-") as tmp:
        times, rows, parts = run(args, tmp)
    report(times, rows, parts, args.twice)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
