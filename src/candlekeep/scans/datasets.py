"""What scans read and write besides candles, as datasets (any store can hold them).

* ``orderbook_snapshots``: one row per (source, symbol, snapshot time): top of book and the
  depth within ``DEPTH_BAND`` of mid on each side, in quote currency; what a scan's
  quality factor and the liquidity gates read.
* ``regimes``: one row per regime refresh: the three indicators, each one's vote, the
  verdict, its confidence and the factor weights it chose.
* ``scan_signals``: one row per (profile, run time, symbol): every factor, the score, each
  gate's verdict, and why a symbol was not scored (``reason``), so runs can be queried
  and charted later.
"""

from __future__ import annotations

import pyarrow as pa

from candlekeep.core.datasets import Dataset, register
from candlekeep.core.schema import TS_TYPE

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()

DEPTH_BAND = 0.02
"""Depth counts the book within ±2 % of mid."""


def _key(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


_INGESTED = pa.field("ingested_at", TS_TYPE)

ORDERBOOK_SNAPSHOTS = register(Dataset("orderbook_snapshots", pa.schema([
    _key("source", STR), _key("symbol", STR), _key("ts", TS_TYPE),
    pa.field("bid", F64), pa.field("ask", F64), pa.field("mid", F64),
    pa.field("spread_bps", F64),
    pa.field("bid_depth_quote", F64), pa.field("ask_depth_quote", F64),
    pa.field("depth_quote", F64),  # the thinner side: what a market order can rely on
    pa.field("bid_levels", I64), pa.field("ask_levels", I64),
    _INGESTED]), key=("source", "symbol", "ts"), version="ingested_at", time="ts"))

REGIMES = register(Dataset("regimes", pa.schema([
    _key("universe", STR), _key("ts", TS_TYPE),
    pa.field("regime", STR), pa.field("confidence", F64),
    pa.field("btc_volatility", F64), pa.field("above_ma_share", F64),
    pa.field("breadth", F64),
    pa.field("volatility_vote", STR), pa.field("above_ma_vote", STR),
    pa.field("breadth_vote", STR),
    pa.field("weight_momentum", F64), pa.field("weight_technical", F64),
    pa.field("weight_volume", F64), pa.field("weight_quality", F64),
    pa.field("next_refresh", TS_TYPE),
    _INGESTED]), key=("universe", "ts"), version="ingested_at", time="ts"))

SCAN_SIGNALS = register(Dataset("scan_signals", pa.schema([
    _key("universe", STR), _key("profile", STR), _key("run_ts", TS_TYPE), _key("symbol", STR),
    pa.field("source", STR), pa.field("regime", STR),
    pa.field("score", F64), pa.field("momentum", F64), pa.field("technical", F64),
    pa.field("volume", F64), pa.field("quality", F64), pa.field("vadr", F64),
    pa.field("spread_bps", F64), pa.field("depth_usd", F64), pa.field("fresh", BOOL),
    pa.field("passed", BOOL),
    pa.field("reason", STR),  # why not scored or not passed; null when passed
    _INGESTED]), key=("universe", "profile", "run_ts", "symbol"), version="ingested_at",
    time="run_ts"))

__all__ = ["DEPTH_BAND", "ORDERBOOK_SNAPSHOTS", "REGIMES", "SCAN_SIGNALS"]
