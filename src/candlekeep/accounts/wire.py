"""Hyperliquid's ``/info`` replies as rows of the account datasets.

Hyperliquid sends numbers as decimal strings and times as epoch milliseconds; every field a
dataset needs is read here, once, and a reply that lacks one (or holds a value of the wrong
kind) is a ``WireError`` naming the info type, the item and the field: nothing of that reply
is stored. Fields a dataset does not model are ignored, so a new field on the exchange's side
breaks nothing.

Each function returns a list of plain dicts (one per row, without the ``source``, ``account``,
``address`` and ``ingested_at`` columns, which ``Who.table`` adds), because replies are small
(at most 2,000 items) and the paging code needs each row's key and time before it builds a
table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import SourceError

Row = dict[str, Any]


class WireError(SourceError):
    """A reply that does not have the shape Hyperliquid documents: nothing of it is kept."""


@dataclass(frozen=True, slots=True)
class Who:
    """The account a row belongs to: configured source and name, and the address (the
    identity every key starts with)."""

    source: str
    account: str
    address: str

    def table(self, dataset: Dataset, rows: Sequence[Row], ingested_at_ms: int) -> pa.Table:
        """``rows`` as a batch of ``dataset``, with who and when added, in its schema."""
        n = len(rows)
        cols: dict[str, list[Any]] = {}
        for name in dataset.schema.names:
            if name == "source":
                cols[name] = [self.source] * n
            elif name == "account":
                cols[name] = [self.account] * n
            elif name == "address":
                cols[name] = [self.address] * n
            elif name == "ingested_at":
                cols[name] = [ingested_at_ms] * n
            else:
                cols[name] = [r.get(name) for r in rows]
        return _table(dataset, cols)


def _table(dataset: Dataset, cols: Mapping[str, list[Any]]) -> pa.Table:
    """Columns of plain values (times as epoch ms) as a batch of ``dataset``."""
    arrays = []
    for field in dataset.schema:
        values = cols[field.name]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=dataset.schema)


# ------------------------------------------------------------------------ field readers


class _Item:
    """One object of a reply, read field by field with errors that say where."""

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise WireError(f"{what}: expected an object, got {_kind(obj)}")
        self.obj: dict[str, Any] = obj
        self.what = what

    def _bad(self, key: str, expected: str) -> WireError:
        return WireError(f"{self.what}: field {key!r} is {_show(self.obj.get(key))}, "
                         f"expected {expected}")

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def num(self, key: str) -> float:
        """A decimal string (or a JSON number) as a float; required."""
        value = self.obj.get(key)
        if isinstance(value, bool) or value is None:
            raise self._bad(key, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise self._bad(key, "a number") from None

    def opt_num(self, key: str) -> float | None:
        return None if self.obj.get(key) is None else self.num(key)

    def int_(self, key: str) -> int:
        value = self.obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def opt_int(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.int_(key)

    def str_(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.str_(key)

    def bool_(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def item(self, key: str) -> _Item:
        return _Item(self.obj.get(key), f"{self.what}.{key}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def items(reply: Any, info_type: str) -> list[Any]:
    """A reply that must be a JSON list (every paged type answers with one)."""
    if not isinstance(reply, list):
        raise WireError(f"{info_type}: expected a list, got {_kind(reply)}")
    return reply


# ------------------------------------------------------------------------ snapshots


def account_row(state: Any) -> tuple[Row, int | None]:
    """``clearinghouseState``'s summary as an account snapshot, and the reply's own
    ``time`` (when the exchange took it; None when absent)."""
    top = _Item(state, "clearinghouseState")
    summary = top.item("marginSummary")
    row = {"account_value": summary.num("accountValue"),
           "total_margin_used": summary.num("totalMarginUsed"),
           "total_ntl_pos": summary.num("totalNtlPos"),
           "total_raw_usd": summary.num("totalRawUsd"),
           "withdrawable": top.num("withdrawable"),
           "cross_maintenance_margin_used": top.opt_num("crossMaintenanceMarginUsed")}
    return row, top.opt_int("time")


def position_rows(state: Any) -> list[Row]:
    """``clearinghouseState.assetPositions`` (open positions only; a flat account has none)."""
    top = _Item(state, "clearinghouseState")
    listed = top.obj.get("assetPositions")
    if not isinstance(listed, list):
        raise top._bad("assetPositions", "a list")
    rows = []
    for i, entry in enumerate(listed):
        p = _Item(entry, f"clearinghouseState.assetPositions[{i}]").item("position")
        lev = p.item("leverage") if p.has("leverage") else None
        cum = p.obj.get("cumFunding")
        rows.append({
            "coin": p.str_("coin"), "szi": p.num("szi"), "entry_px": p.opt_num("entryPx"),
            "position_value": p.opt_num("positionValue"),
            "unrealized_pnl": p.opt_num("unrealizedPnl"),
            "return_on_equity": p.opt_num("returnOnEquity"),
            "leverage_type": lev.opt_str("type") if lev else None,
            "leverage": lev.opt_num("value") if lev else None,
            "liquidation_px": p.opt_num("liquidationPx"),
            "margin_used": p.opt_num("marginUsed"),
            "max_leverage": p.opt_num("maxLeverage"),
            "cum_funding": (p.item("cumFunding").opt_num("allTime")
                            if isinstance(cum, dict) else None),
        })
    return rows


def _order_fields(o: _Item) -> Row:
    return {"oid": o.int_("oid"), "coin": o.str_("coin"), "side": o.str_("side"),
            "limit_px": o.num("limitPx"), "sz": o.num("sz"), "orig_sz": o.opt_num("origSz"),
            "order_time": o.int_("timestamp"), "order_type": o.opt_str("orderType"),
            "tif": o.opt_str("tif"), "reduce_only": o.bool_("reduceOnly")}


def open_order_rows(reply: Any) -> list[Row]:
    """``frontendOpenOrders`` (the long form: order type, tif, reduce-only)."""
    return [_order_fields(_Item(o, f"frontendOpenOrders[{i}]"))
            for i, o in enumerate(items(reply, "frontendOpenOrders"))]


def order_rows(reply: Any) -> list[Row]:
    """``historicalOrders``: each order with its latest status and when it took it."""
    rows = []
    for i, entry in enumerate(items(reply, "historicalOrders")):
        h = _Item(entry, f"historicalOrders[{i}]")
        row = _order_fields(h.item("order"))
        row["status"] = h.str_("status")
        row["status_ts"] = h.int_("statusTimestamp")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ history


def synthetic_tid(f: Mapping[str, Any]) -> int:
    """A fill's key when the exchange sent no ``tid``: a hash of the fields that make one
    fill (time, coin, order, side, price, size, the position it started from, transaction
    hash), the same on every pull. Negative, so it never equals a real (positive) tid."""
    parts = [f.get(k) for k in ("time", "coin", "oid", "side", "px", "sz", "startPosition",
                                "hash", "crossed", "dir")]
    digest = hashlib.blake2b(json.dumps(parts, separators=(",", ":")).encode(),
                             digest_size=8).digest()
    return -(int.from_bytes(digest, "big") >> 1) - 1


def fill_rows(reply: Any) -> list[Row]:
    """``userFillsByTime``; a fill without ``tid`` gets ``synthetic_tid``."""
    rows = []
    for i, raw in enumerate(items(reply, "userFillsByTime")):
        f = _Item(raw, f"userFillsByTime[{i}]")
        tid = f.opt_int("tid")
        rows.append({
            "tid": synthetic_tid(f.obj) if tid is None else tid,
            "time": f.int_("time"), "coin": f.str_("coin"), "px": f.num("px"),
            "sz": f.num("sz"), "side": f.str_("side"), "dir": f.opt_str("dir"),
            "start_position": f.opt_num("startPosition"),
            "closed_pnl": f.opt_num("closedPnl"), "fee": f.opt_num("fee"),
            "fee_token": f.opt_str("feeToken"), "builder_fee": f.opt_num("builderFee"),
            "oid": f.opt_int("oid"), "hash": f.opt_str("hash"), "crossed": f.bool_("crossed"),
            "tid_synthetic": tid is None,
        })
    return rows


def funding_rows(reply: Any) -> list[Row]:
    """``userFunding``: one payment per position and funding time."""
    rows = []
    for i, raw in enumerate(items(reply, "userFunding")):
        e = _Item(raw, f"userFunding[{i}]")
        d = e.item("delta")
        rows.append({"time": e.int_("time"), "coin": d.str_("coin"), "usdc": d.num("usdc"),
                     "szi": d.opt_num("szi"), "funding_rate": d.opt_num("fundingRate"),
                     "n_samples": d.opt_int("nSamples"), "hash": e.opt_str("hash")})
    return rows


def ledger_rows(reply: Any) -> list[Row]:
    """``userNonFundingLedgerUpdates``: deposits, withdrawals, transfers... Kinds differ in
    their fields, so the common ones are columns and the whole delta is kept as JSON."""
    rows = []
    for i, raw in enumerate(items(reply, "userNonFundingLedgerUpdates")):
        e = _Item(raw, f"userNonFundingLedgerUpdates[{i}]")
        d = e.item("delta")
        rows.append({"time": e.int_("time"), "hash": e.str_("hash"), "kind": d.str_("type"),
                     "usdc": d.opt_num("usdc") if d.has("usdc") else d.opt_num("usdcValue"),
                     "token": d.opt_str("token"), "amount": d.opt_num("amount"),
                     "fee": d.opt_num("fee"), "destination": d.opt_str("destination"),
                     "details": json.dumps(d.obj, sort_keys=True, separators=(",", ":"))})
    return rows
