"""What the benchmarks share: candle batches built column-wise, and a stopwatch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE
from candlekeep.core.timeframes import MINUTE_MS, WEEK_MS

T0 = 1_600_000_000_000 // WEEK_MS * WEEK_MS  # on every grid, the weekly one included


def timed(fn: Callable[..., object], *args: object) -> float:
    """Seconds ``fn(*args)`` took."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def candle_batch(series: int, per_series: int, *, seed: int = 0,
                 keep: np.ndarray | None = None, first_index: int = 0) -> pa.Table:
    """``series`` 1m series of ``per_series`` candles each, series after series; ``keep``
    (a mask per series row) punches holes."""
    rng = np.random.default_rng(seed)
    idx = np.arange(first_index, first_index + per_series)
    parts_ts, parts_sym = [], []
    for s in range(series):
        mine = idx if keep is None else idx[keep[s]]
        parts_ts.append(T0 + mine * MINUTE_MS)
        parts_sym.append(np.full(len(mine), s))
    ts = np.concatenate(parts_ts)
    sym = np.concatenate(parts_sym)
    n = len(ts)
    close = 100 + rng.standard_normal(n).cumsum() * 0.01
    names = pa.array([f"SYM{s:03d}/USDT" for s in range(series)])
    return pa.table({
        "source": pa.array(["binance"]).take(pa.array(np.zeros(n, np.int64))),
        "symbol": names.take(pa.array(sym)),
        "timeframe": pa.array(["1m"]).take(pa.array(np.zeros(n, np.int64))),
        "ts": pa.array(ts).cast(TS_TYPE),
        "open": close - 0.05,
        "high": close + 0.5,
        "low": close - 0.5,
        "close": close,
        "volume": rng.random(n) * 10,
        "quote_volume": rng.random(n) * 1000,
        "trades": rng.integers(0, 1000, n),
        "ingested_at": pa.array(np.full(n, T0, np.int64)).cast(TS_TYPE),
    }, schema=CANDLE_SCHEMA)
