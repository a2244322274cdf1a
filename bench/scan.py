"""A hot scan over 300 symbols with 30 days of 1h candles stored, against one SELECT of
the same candles from the same store.

Target (issue 10): the scan's wall time within 3x one ``SELECT`` reading the same candles,
measured in the same run (the work is reading; the maths is vectorised). The store is
filled through its own ``upsert``: ``--symbols`` synthetic 1h series of ``--days`` days, one
fresh order-book snapshot per symbol and a regime verdict (the ``regime`` job's own
computation), with a fixed-list universe of every symbol. Timed, median of ``--repeat``,
in alternating order:

* the scan as the ``scan`` job does it: ``scan_now`` (universe, candle read over the
  lookback, order books, regime, factors, scoring), ``write_artifacts`` and the upsert of
  its ``scan_signals`` rows;
* the store's ``read`` of the candles the scan reads (its lookback, default 3 days), and of
  all the stored days;
* (DuckDB) a raw ``SELECT * FROM candles WHERE ...`` fetched as Arrow on a connection
  opened for it, as the store opens one per call, over the same two windows.

The issue's ratio is "scan / one SELECT reading the same candles": the candles the scan
reads are its lookback, so that ratio is the verdict; the one against all stored days is
shown for reference. Not a test.

Run: ``python bench/scan.py [--symbols 300] [--days 30] [--lookback 3d] [--repeat 5]
[--pg]`` (``--pg``: a throw-away PostgreSQL database, see ``pg_common.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import duckdb

from candlekeep.config import parse_config
from candlekeep.core.datasets import CANDLES
from candlekeep.core.timeframes import HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import ms_to_datetime, parse_duration
from candlekeep.jobs.regime import RegimeParams, artifacts_dir, regime_now, regime_row
from candlekeep.jobs.runtime import Runtime
from candlekeep.jobs.scan import ScanParams, scan_now
from candlekeep.scans.artifacts import scan_signal_rows, write_artifacts
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS, REGIMES, SCAN_SIGNALS
from candlekeep.stores.base import Store
from common import T0, timed
from scan_factors import books, candles

UNIVERSE = "bench"
RAW_SQL = "SELECT * FROM candles WHERE source = ? AND timeframe = ? AND ts >= ? AND ts < ?"


@contextmanager
def store_config(pg: bool, folder: Path) -> Iterator[dict[str, object]]:
    """The ``stores.main`` section: a DuckDB file under ``folder``, or a throw-away
    PostgreSQL database."""
    if not pg:
        yield {"type": "duckdb", "path": str(folder / "scan.duckdb")}
        return
    from pg_common import throwaway_database

    with throwaway_database() as dsn:
        yield {"type": "postgresql", "dsn": dsn}


def runtime(folder: Path, store: dict[str, object], names: list[str]) -> Runtime:
    cfg = parse_config({
        "data_dir": str(folder / "data"),
        "stores": {"main": store},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "universes": {UNIVERSE: {"source": "sim", "store": "main", "symbols": names}},
    }, str(folder / "candlekeep.yaml"), folder)
    return Runtime(cfg)


def fill(rt: Runtime, symbols: int, bars: int, now: int) -> int:
    """Candles, one order book per symbol and a regime row, through the store; rows of
    candles stored."""
    store = rt.store("main")
    table = candles(symbols, bars)
    store.upsert(CANDLES, table)
    names = table["symbol"].unique().to_pylist()
    store.upsert(ORDERBOOK_SNAPSHOTS, books(names, now - MINUTE_MS))
    found = regime_now(rt, RegimeParams(universe=UNIVERSE, btc=names[0]), now)
    store.upsert(REGIMES, regime_row(found, now))
    return int(table.num_rows)


def hot_scan(rt: Runtime, params: ScanParams, now: int) -> None:
    """What the ``scan`` job does, without the job runner around it."""
    run = scan_now(rt, params, now)
    write_artifacts(artifacts_dir(rt.config), run.result, run.run_ts, UNIVERSE)
    rt.store(run.universe.store).upsert(
        SCAN_SIGNALS, scan_signal_rows(run.result, run.run_ts, now, UNIVERSE))


def store_read(store: Store, lo: int, hi: int) -> None:
    store.read(CANDLES, where={"source": "sim", "timeframe": "1h"}, column="ts", lo=lo, hi=hi)


def raw_select(path: str, lo: int, hi: int) -> None:
    con = duckdb.connect(path, read_only=True)
    params = ["sim", "1h", ms_to_datetime(lo), ms_to_datetime(hi)]
    con.sql(RAW_SQL, params=params).to_arrow_table()
    con.close()


def run(args: argparse.Namespace, folder: Path) -> tuple[int, dict[str, list[float]]]:
    bars = args.days * 24
    now = T0 + bars * HOUR_MS + 5 * MINUTE_MS  # the last stored candle is the newest closed
    end = now // HOUR_MS * HOUR_MS
    lookback = parse_duration(args.lookback)
    start = end - round(lookback * 1000)
    names = [f"S{s:04d}/USDT" for s in range(args.symbols)]
    params = ScanParams(profile="hot", universe=UNIVERSE, lookback=lookback)
    times: dict[str, list[float]] = {}
    with store_config(args.pg, folder) as cfg:
        rt = runtime(folder, cfg, names)
        try:
            rows = fill(rt, args.symbols, bars, now)
            store = rt.store("main")
            cases: list[tuple[str, Callable[[], object]]] = [
                ("scan (scan_now + artifacts + upsert)", partial(hot_scan, rt, params, now)),
                (f"store.read, lookback {args.lookback}", partial(store_read, store, start, end)),
                (f"store.read, all {args.days} days", partial(store_read, store, T0, end)),
            ]
            if not args.pg:
                path = str(cfg["path"])
                cases += [
                    (f"raw SELECT, lookback {args.lookback}",
                     partial(raw_select, path, start, end)),
                    (f"raw SELECT, all {args.days} days", partial(raw_select, path, T0, end)),
                ]
            hot_scan(rt, params, now)  # imports and the artifacts folder, outside the timing
            for rep in range(args.repeat):
                for name, fn in cases if rep % 2 == 0 else reversed(cases):
                    times.setdefault(name, []).append(timed(fn))
            if args.profile:
                profile(partial(hot_scan, rt, params, now))
        finally:
            asyncio.run(rt.aclose())
    return rows, times


def profile(fn: Callable[[], object]) -> None:
    """One more scan under cProfile: the top items by cumulative time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    print()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def report(args: argparse.Namespace, rows: int, times: dict[str, list[float]]) -> None:
    kind = "PostgreSQL" if args.pg else "DuckDB"
    print(f"{kind}: {args.symbols} symbols x {args.days} days of 1h candles = {rows:,} rows "
          f"stored; scan lookback {args.lookback}; median of {args.repeat}\n")
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'case':40s} {'median':>9s} {'min':>9s}")
    for name, values in times.items():
        print(f"{name:40s} {med[name] * 1000:7.1f}ms {min(values) * 1000:7.1f}ms")
    scan = med["scan (scan_now + artifacts + upsert)"]
    print()
    for name, seconds in med.items():
        if not name.startswith("scan"):
            print(f"scan / {name:34s} = {scan / seconds:6.2f}x")
    ratio = scan / med[f"store.read, lookback {args.lookback}"]
    verdict = "meets" if ratio <= 3.0 else "MISSES"
    print(f"\nissue's ratio (the candles the scan reads, through the store): {ratio:.2f}x "
          f"({verdict} the 3x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--lookback", default="3d", help="the scan's lookback (its default)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of DuckDB")
    parser.add_argument("--profile", action="store_true",
                        help="then profile one more scan (cProfile, top 25 cumulative)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="candlekeep-bench-") as tmp:
        rows, times = run(args, Path(tmp))
    report(args, rows, times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
