"""The account datasets: what an exchange account's state and history look like as rows.

Exchange-neutral names and columns (Hyperliquid is the first source writing them). Every
key starts with the account's address, so two accounts' rows never collapse into one (the
script this replaces keyed funding by coin and time and lost a wallet's payments). Every
dataset carries the configured account name and the source for reading; the address is the
identity. Snapshots are keyed by their time: each run adds one; history datasets are keyed
by the exchange's own identity of the event, so pulling an event twice writes one row.
"""

from __future__ import annotations

import pyarrow as pa

from candlekeep.core.datasets import Dataset
from candlekeep.core.schema import TS_TYPE

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()


def _key(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


_WHO = [pa.field("source", STR), pa.field("account", STR), _key("address", STR)]
_INGESTED = pa.field("ingested_at", TS_TYPE)

ACCOUNT_SNAPSHOTS = Dataset("account_snapshots", pa.schema([
    *_WHO, _key("snapshot_ts", TS_TYPE),
    pa.field("account_value", F64), pa.field("total_margin_used", F64),
    pa.field("total_ntl_pos", F64), pa.field("total_raw_usd", F64),
    pa.field("withdrawable", F64), pa.field("cross_maintenance_margin_used", F64),
    _INGESTED]), key=("address", "snapshot_ts"), time="snapshot_ts")

POSITIONS_SNAPSHOTS = Dataset("positions_snapshots", pa.schema([
    *_WHO, _key("snapshot_ts", TS_TYPE), _key("coin", STR),
    pa.field("szi", F64),  # signed size: negative is short
    pa.field("entry_px", F64), pa.field("position_value", F64),
    pa.field("unrealized_pnl", F64), pa.field("return_on_equity", F64),
    pa.field("leverage_type", STR), pa.field("leverage", F64),
    pa.field("liquidation_px", F64), pa.field("margin_used", F64),
    pa.field("max_leverage", F64), pa.field("cum_funding", F64),
    _INGESTED]), key=("address", "snapshot_ts", "coin"), time="snapshot_ts")

OPEN_ORDERS_SNAPSHOTS = Dataset("open_orders_snapshots", pa.schema([
    *_WHO, _key("snapshot_ts", TS_TYPE), _key("oid", I64),
    pa.field("coin", STR), pa.field("side", STR), pa.field("limit_px", F64),
    pa.field("sz", F64), pa.field("orig_sz", F64), pa.field("order_time", TS_TYPE),
    pa.field("order_type", STR), pa.field("tif", STR), pa.field("reduce_only", BOOL),
    _INGESTED]), key=("address", "snapshot_ts", "oid"), time="snapshot_ts")

ORDERS = Dataset("orders", pa.schema([
    *_WHO, _key("oid", I64),
    pa.field("coin", STR), pa.field("side", STR), pa.field("limit_px", F64),
    pa.field("sz", F64), pa.field("orig_sz", F64), pa.field("order_time", TS_TYPE),
    pa.field("order_type", STR), pa.field("tif", STR), pa.field("reduce_only", BOOL),
    pa.field("status", STR),  # open, filled, canceled, rejected, ... as the exchange says
    pa.field("status_ts", TS_TYPE),
    _INGESTED]), key=("address", "oid"), version="status_ts", time="order_time")
"""Historical orders with their latest status: a later status of one order replaces it."""

FILLS = Dataset("fills", pa.schema([
    *_WHO, _key("tid", I64),
    pa.field("time", TS_TYPE), pa.field("coin", STR), pa.field("px", F64),
    pa.field("sz", F64), pa.field("side", STR), pa.field("dir", STR),
    pa.field("start_position", F64), pa.field("closed_pnl", F64), pa.field("fee", F64),
    pa.field("fee_token", STR), pa.field("builder_fee", F64), pa.field("oid", I64),
    pa.field("hash", STR), pa.field("crossed", BOOL),
    pa.field("tid_synthetic", BOOL),  # no tid from the exchange: derived from the fill
    _INGESTED]), key=("address", "tid"), time="time")

FUNDING_PAYMENTS = Dataset("funding_payments", pa.schema([
    *_WHO, _key("time", TS_TYPE), _key("coin", STR),
    pa.field("usdc", F64),  # what the account paid (negative) or received
    pa.field("szi", F64), pa.field("funding_rate", F64), pa.field("n_samples", I64),
    pa.field("hash", STR),
    _INGESTED]), key=("address", "time", "coin"), time="time")

LEDGER_UPDATES = Dataset("ledger_updates", pa.schema([
    *_WHO, _key("time", TS_TYPE), _key("hash", STR), _key("kind", STR),
    pa.field("usdc", F64), pa.field("token", STR), pa.field("amount", F64),
    pa.field("fee", F64), pa.field("destination", STR),
    pa.field("details", STR),  # the whole delta as JSON: kinds differ in their fields
    _INGESTED]), key=("address", "time", "hash", "kind"), time="time")

ASSET_CTX_SNAPSHOTS = Dataset("asset_ctx_snapshots", pa.schema([
    _key("source", STR), _key("coin", STR), _key("snapshot_ts", TS_TYPE),
    pa.field("mark_px", F64), pa.field("oracle_px", F64), pa.field("mid_px", F64),
    pa.field("funding", F64), pa.field("open_interest", F64), pa.field("premium", F64),
    pa.field("day_ntl_vlm", F64), pa.field("prev_day_px", F64),
    _INGESTED]), key=("source", "coin", "snapshot_ts"), time="snapshot_ts")
"""Market-wide context per perpetual (mark, funding, open interest) at a snapshot time."""

FUNDING_RATES = Dataset("funding_rates", pa.schema([
    _key("source", STR), _key("coin", STR), _key("time", TS_TYPE),
    pa.field("funding_rate", F64), pa.field("premium", F64),
    _INGESTED]), key=("source", "coin", "time"), time="time")
"""A perpetual's funding rate history (every account's payments follow from it)."""

ACCOUNT_DATASETS = (ACCOUNT_SNAPSHOTS, POSITIONS_SNAPSHOTS, OPEN_ORDERS_SNAPSHOTS, ORDERS,
                    FILLS, FUNDING_PAYMENTS, LEDGER_UPDATES)
