"""The one Arrow schema for candles, used by every source, store, buffer file and test."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

TS_TYPE = pa.timestamp("ms", tz="UTC")

CANDLE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64(), nullable=True),
        pa.field("trades", pa.int64(), nullable=True),
        pa.field("ingested_at", TS_TYPE, nullable=False),
    ]
)

CANDLE_KEY: tuple[str, ...] = ("source", "symbol", "timeframe", "ts")

GAP_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("gap_start", TS_TYPE, nullable=False),
        pa.field("gap_end", TS_TYPE, nullable=False),
    ]
)


def empty_candles() -> pa.Table:
    return CANDLE_SCHEMA.empty_table()


def candles_from_columns(
    source: str,
    symbol: str,
    timeframe: str,
    ts_ms: Sequence[int] | pa.Array,
    open_: Sequence[float] | pa.Array,
    high: Sequence[float] | pa.Array,
    low: Sequence[float] | pa.Array,
    close: Sequence[float] | pa.Array,
    volume: Sequence[float] | pa.Array,
    ingested_at_ms: int,
    quote_volume: Sequence[float | None] | pa.Array | None = None,
    trades: Sequence[int | None] | pa.Array | None = None,
) -> pa.Table:
    """A candle table for one series from column data (lists or Arrow arrays)."""
    n = len(ts_ms)
    return pa.table(
        {
            "source": pa.array([source] * n, pa.string()) if n else pa.array([], pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()) if n else pa.array([], pa.string()),
            "timeframe": pa.array([timeframe] * n, pa.string())
            if n
            else pa.array([], pa.string()),
            "ts": pa.array(ts_ms, pa.int64()).cast(TS_TYPE),
            "open": pa.array(open_, pa.float64()),
            "high": pa.array(high, pa.float64()),
            "low": pa.array(low, pa.float64()),
            "close": pa.array(close, pa.float64()),
            "volume": pa.array(volume, pa.float64()),
            "quote_volume": pa.array(quote_volume, pa.float64())
            if quote_volume is not None
            else pa.nulls(n, pa.float64()),
            "trades": pa.array(trades, pa.int64())
            if trades is not None
            else pa.nulls(n, pa.int64()),
            "ingested_at": pa.array([ingested_at_ms] * n, pa.int64()).cast(TS_TYPE),
        },
        schema=CANDLE_SCHEMA,
    )


def conform(table: pa.Table) -> pa.Table:
    """``table`` cast to CANDLE_SCHEMA (column order, types); raises if a column is missing."""
    if table.schema.equals(CANDLE_SCHEMA):
        return table
    return table.select(CANDLE_SCHEMA.names).cast(CANDLE_SCHEMA)
