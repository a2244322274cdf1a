"""Upsert cost of ClickHouseStore (embedded chdb) against a plain insert_arrow of the same rows.

Target (issue): 1M new candles (10 series) through ``upsert_candles`` in at most 1.5 times
``client.insert_arrow`` of the same Arrow table into a table of the same layout (the store's
DDL), measured in the same run, alternating which goes first, each into a fresh database of
one temporary chdb path, both through clickhouse-connect. Also timed: the same rows upserted
again (a second part per partition until merges: an upsert is an insert), the last 100
candles of each series again, a partial batch (key + close) of those, which reads the stored
rows first, and the ``OPTIMIZE … FINAL`` that ``optimize_after_flush`` runs after all that.

Run: ``python bench/ch_upsert.py [--rows 1000000] [--series 10] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from functools import partial

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from candlekeep.core.datasets import CANDLES
from candlekeep.stores.ch_sql import create_table_sql, ident
from candlekeep.stores.clickhouse_store import ClickHouseStore
from common import candle_batch, timed
from upsert import tail

BASELINE = "plain insert_arrow (baseline)"
UPSERT = "store upsert, new candles"


def fresh_plain(client: Client, database: str) -> None:
    client.command(f"CREATE DATABASE {ident(database)}")
    client.command(create_table_sql(database, CANDLES))


def run(args: argparse.Namespace, path: str) -> dict[str, list[float]]:
    per_series = args.rows // args.series
    batch = candle_batch(args.series, per_series)
    last100 = tail(batch, args.series, per_series, min(100, per_series))
    partial_batch = last100.select(["source", "symbol", "timeframe", "ts", "close"])
    client = clickhouse_connect.get_client(interface="chdb", path=path)
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for rep in range(args.repeat):
        fresh_plain(client, f"plain{rep}")
        store = ClickHouseStore("bench", f"chdb://{path}", database=f"store{rep}",
                                optimize_after_flush=True)
        with store._client() as own:  # the table is created outside the timing, as for
            store._ensure_table(own, CANDLES)  # the baseline
        pair: list[tuple[str, Callable[[], object]]] = [
            (BASELINE, partial(client.insert_arrow, "candles", batch, database=f"plain{rep}")),
            (UPSERT, partial(store.upsert_candles, batch)),
        ]
        for name, fn in pair if rep % 2 == 0 else reversed(pair):  # neither always goes first
            add(name, timed(fn))
        add("  again: whole batch", timed(partial(store.upsert_candles, batch)))
        add("  again: last 100 per series", timed(partial(store.upsert_candles, last100)))
        add("  partial batch (key + close), last 100", timed(
            partial(store.upsert, CANDLES, partial_batch)))
        add("  OPTIMIZE FINAL (optimize_after_flush)", timed(partial(store.flushed, [CANDLES])))
        assert sum(s.count for s in store.spans()) == batch.num_rows, "lost or doubled rows"
        store.close()
    client.close()
    return times


def report(times: dict[str, list[float]], rows: int) -> None:
    base = statistics.median(times[BASELINE])
    print(f"{'case':42s} {'median':>10s} {'min':>10s} {'x baseline':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:42s} {med * 1000:8.0f}ms {min(values) * 1000:8.0f}ms {med / base:10.2f}x")
    ratio = statistics.median(times[UPSERT]) / base
    best = min(times[UPSERT]) / min(times[BASELINE])
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"\n{rows:,} new candles: upsert/plain = {ratio:.2f}x ({verdict} the 1.5x target; "
          f"best of each: {best:.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="candlekeep-bench-chdb-") as tmp:
        times = run(args, tmp)
    report(times, args.rows // args.series * args.series)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
