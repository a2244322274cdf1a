"""Candle test data and the gap definition spelled out in Python, for every store's tests."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa

from candlekeep.core.schema import GAP_SCHEMA, candles_from_columns
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import DAY_MS, parse_timeframe

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS  # 2023-11-14 00:00 UTC, a Tuesday
BTC = SeriesKey("binance", "BTC/USDT", "1m")
ETH = SeriesKey("binance", "ETH/USDT", "1m")

Gap = tuple[str, str, str, int, int]

def candles(
    series: SeriesKey,
    ts_ms: Sequence[int],
    *,
    price: float = 100.0,
    ingested_at_ms: int = T0,
    trades: Sequence[int | None] | None = None,
) -> pa.Table:
    n = len(ts_ms)
    return candles_from_columns(
        series.source,
        series.symbol,
        series.timeframe,
        list(ts_ms),
        [price] * n,
        [price + 1] * n,
        [price - 1] * n,
        [price + 0.5] * n,
        [10.0] * n,
        ingested_at_ms,
        quote_volume=[price * 10.0] * n,
        trades=list(trades) if trades is not None else [7] * n,
    )


def grid(series: SeriesKey, start_ms: int, count: int) -> list[int]:
    tf = parse_timeframe(series.timeframe)
    first = tf.ceil(start_ms)
    return [first + i * tf.ms for i in range(count)]


def without(ts: Sequence[int], *indices: int) -> list[int]:
    drop = set(indices)
    return [t for i, t in enumerate(ts) if i not in drop]


def gaps(table: pa.Table) -> list[Gap]:
    assert table.schema.equals(GAP_SCHEMA)
    return [
        (r["source"], r["symbol"], r["timeframe"], ms_of(r["gap_start"]), ms_of(r["gap_end"]))
        for r in table.to_pylist()
    ]


def ms_of(value: object) -> int:
    ts = pa.scalar(value, type=pa.timestamp("ms", tz="UTC"))
    return int(ts.cast(pa.int64()).as_py())


def gap(series: SeriesKey, start_ms: int, end_ms: int) -> Gap:
    return (series.source, series.symbol, series.timeframe, start_ms, end_ms)


def reference_gaps(
    stored: Mapping[SeriesKey, Iterable[int]], start_ms: int | None, end_ms: int | None
) -> list[Gap]:
    """The definition, spelled out: runs of missing grid points between consecutive stored
    candles, intersected with [start_ms, end_ms)."""
    out: list[Gap] = []
    for key in sorted(stored):
        tf = parse_timeframe(key.timeframe)
        ts = sorted(set(stored[key]))
        lo = tf.ceil(start_ms) if start_ms is not None else None
        hi = tf.ceil(end_ms) - tf.ms if end_ms is not None else None
        for a, b in itertools.pairwise(ts):
            if b - a <= tf.ms:
                continue
            g0, g1 = a + tf.ms, b - tf.ms
            if lo is not None:
                g0 = max(g0, lo)
            if hi is not None:
                g1 = min(g1, hi)
            if g0 <= g1:
                out.append(gap(key, g0, g1))
    return out



def random_holes(rng: random.Random, count: int) -> list[bool]:
    """Holes in several styles: sparse singles, runs, dense clusters, long outages."""
    keep = [True] * count
    style = rng.choice(["singles", "runs", "dense", "mixed"])
    density = {"singles": 0.003, "runs": 0.002, "dense": 0.2, "mixed": 0.01}[style]
    i = 0
    while i < count:
        if rng.random() < density:
            length = 1 if style == "singles" else rng.choice([1, 1, 2, 3, 5, 40, 300])
            for j in range(i, min(count, i + length)):
                keep[j] = False
            i += length
        i += 1
    return keep
