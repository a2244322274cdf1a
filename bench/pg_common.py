"""What the PostgreSQL benchmarks share: a throw-away database and candle batches."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import pyarrow as pa

from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE

ADMIN = os.environ.get("CANDLEKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
T0 = 1_600_000_000_000 // 604_800_000 * 604_800_000  # on every grid, the weekly one included
MINUTE_MS = 60_000


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new database on the admin URL's server (``CANDLEKEEP_BENCH_PG``), dropped after."""
    name = f"ck_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield ADMIN.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
