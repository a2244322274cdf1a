"""The availability dataset: one row per (market, date, symbol).

A probe writes the availability columns only; the volume columns come from the daily 1d
kline files and are written separately. Stores upsert a batch that lacks columns as a
partial update, so a re-probe never erases volumes already recorded.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from candlekeep.core.datasets import Dataset
from candlekeep.core.schema import TS_TYPE


class ProbeStatus(StrEnum):
    """What one HEAD probe concluded: 200, 404, or anything else after retries."""

    AVAILABLE = "available"
    MISSING = "missing"
    ERROR = "error"


AVAILABILITY_SCHEMA = pa.schema([
    pa.field("market", pa.string(), nullable=False),  # archive folder: futures/um, spot ...
    pa.field("date", pa.date32(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),  # exchange id: BTCUSDT
    pa.field("data_type", pa.string()),  # klines/1m
    pa.field("status", pa.string()),  # ProbeStatus
    pa.field("available", pa.bool_()),
    pa.field("size", pa.int64()),
    pa.field("last_modified", TS_TYPE),
    pa.field("url", pa.string()),
    pa.field("error", pa.string()),
    pa.field("probed_at", TS_TYPE),
    pa.field("volume", pa.float64()),
    pa.field("quote_volume", pa.float64()),
    pa.field("trades", pa.int64()),
])

PROBE_COLUMNS = ("market", "date", "symbol", "data_type", "status", "available", "size",
                 "last_modified", "url", "error", "probed_at")
VOLUME_COLUMNS = ("market", "date", "symbol", "volume", "quote_volume", "trades")

AVAILABILITY = Dataset("binance_availability", AVAILABILITY_SCHEMA,
                       key=("market", "date", "symbol"), time="date")
