"""A scan's maths over 300 symbols x 720 1h candles (30 days), against building its input.

The issue's goal is a hot scan within 3x one SELECT of the same candles; the maths here
must be a small part of that. This prints the median time of building the candles table
(Arrow from numpy columns, what a store read ends with), of ``compute_factors`` over it
(with one order book per symbol), of scoring with the hot gates, and of writing the
artifacts, and the ratio factors / build. Not a test.

Run: ``python bench/scan_factors.py [--symbols 300] [--bars 720] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from candlekeep.config.scans import ScansConfig
from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE
from candlekeep.core.timeframes import HOUR_MS
from candlekeep.scans.artifacts import write_artifacts
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
from candlekeep.scans.factors import compute_factors
from candlekeep.scans.scoring import evaluate
from common import T0, timed


def candles(symbols: int, bars: int, seed: int = 0) -> pa.Table:
    """``symbols`` 1h series of ``bars`` candles, sorted by (symbol, ts)."""
    rng = np.random.default_rng(seed)
    n = symbols * bars
    ts = T0 + np.tile(np.arange(bars, dtype=np.int64), symbols) * HOUR_MS
    sym = np.repeat(np.arange(symbols), bars)
    close = 100 * np.exp((rng.standard_normal(n) * 0.01).reshape(symbols, bars)
                         .cumsum(axis=1).ravel())
    names = pa.array([f"S{s:04d}/USDT" for s in range(symbols)])
    zeros = np.zeros(n, np.int64)
    return pa.table({
        "source": pa.array(["sim"]).take(pa.array(zeros)),
        "symbol": names.take(pa.array(sym)),
        "timeframe": pa.array(["1h"]).take(pa.array(zeros)),
        "ts": pa.array(ts).cast(TS_TYPE),
        "open": close, "high": close * 1.002, "low": close * 0.998, "close": close,
        "volume": rng.random(n) * 1000,
        "quote_volume": rng.random(n) * 100_000,
        "trades": rng.integers(0, 1000, n),
        "ingested_at": pa.array(np.full(n, T0, np.int64)).cast(TS_TYPE),
    }, schema=CANDLE_SCHEMA)


def books(names: list[str], now_ms: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(names)
    depth = rng.random(n) * 1e6
    ts = pa.array(np.full(n, now_ms, np.int64)).cast(TS_TYPE)
    return pa.table({
        "source": pa.array(["sim"] * n), "symbol": pa.array(names), "ts": ts,
        "bid": np.ones(n), "ask": np.ones(n), "mid": np.ones(n),
        "spread_bps": rng.random(n) * 80, "bid_depth_quote": depth,
        "ask_depth_quote": depth, "depth_quote": depth,
        "bid_levels": np.full(n, 20), "ask_levels": np.full(n, 20), "ingested_at": ts,
    }, schema=ORDERBOOK_SNAPSHOTS.schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--bars", type=int, default=720)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    table = candles(args.symbols, args.bars)
    now = T0 + args.bars * HOUR_MS
    book = books([f"S{s:04d}/USDT" for s in range(args.symbols)], now)
    factors = compute_factors(table, now, books=book)
    result = evaluate(factors, "hot", "normal", ScansConfig())
    with tempfile.TemporaryDirectory() as tmp:
        times = {
            "build candles table": [timed(candles, args.symbols, args.bars)
                                    for _ in range(args.repeat)],
            "compute_factors": [timed(lambda: compute_factors(table, now, books=book))
                                for _ in range(args.repeat)],
            "evaluate (hot)": [timed(evaluate, factors, "hot", "normal", ScansConfig())
                               for _ in range(args.repeat)],
            "write artifacts": [timed(write_artifacts, Path(tmp), result, now, "bench")
                                for _ in range(args.repeat)],
        }
    print(f"{args.symbols} symbols x {args.bars} 1h bars = {table.num_rows:,} rows, "
          f"median of {args.repeat}")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, seconds in med.items():
        print(f"  {name:<22} {seconds * 1000:8.1f} ms")
    print(f"  factors / build = {med['compute_factors'] / med['build candles table']:.2f}x; "
          f"scored {int((~np.isnan(result.scores)).sum())}, passed {int(result.passed.sum())}")


if __name__ == "__main__":
    main()
