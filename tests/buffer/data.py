"""Batches whose later writes overwrite earlier ones, and the rows a store must end with."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from candlekeep.core.schema import CANDLE_KEY
from candlekeep.core.series import SeriesKey
from candlekeep.stores.base import Store
from tests.stores.candle_data import BTC, ETH, T0, candles, grid

SERIES = (BTC, ETH)


def overlapping_batches(count: int, rows: int, step: int) -> list[pa.Table]:
    """``count`` batches taking turns over SERIES; batch i of a series starts ``step``
    candles after batch i-1, so with ``step < rows`` each overwrites the tail of the one
    before with its own price (its number)."""
    out = []
    for i in range(count):
        series = SERIES[i % len(SERIES)]
        start = T0 + (i // len(SERIES)) * step * 60_000
        out.append(candles(series, grid(series, start, rows), price=float(i)))
    return out


def expected(batches: Sequence[pa.Table]) -> dict[tuple[object, ...], float]:
    """Key → open price after writing ``batches`` in order (the last write wins)."""
    out: dict[tuple[object, ...], float] = {}
    for b in batches:
        for row in b.select([*CANDLE_KEY, "open"]).to_pylist():
            out[tuple(row[k] for k in CANDLE_KEY)] = row["open"]
    return out


def stored(store: Store, series: Sequence[SeriesKey] = SERIES) -> list[tuple[object, ...]]:
    """Every stored (key, open) row of ``series``: duplicates show as repeated keys."""
    rows = []
    for s in series:
        t = store.read_candles(s)
        rows += [(*(r[k] for k in CANDLE_KEY), r["open"])
                 for r in t.select([*CANDLE_KEY, "open"]).to_pylist()]
    return rows


def assert_exactly(store: Store, batches: Sequence[pa.Table]) -> None:
    """The store holds every written key once, with the last written value."""
    rows = stored(store)
    keys = [r[:-1] for r in rows]
    assert len(keys) == len(set(keys)), f"{store.name}: {len(keys) - len(set(keys))} duplicates"
    assert dict(zip(keys, (r[-1] for r in rows), strict=True)) == expected(batches), store.name

