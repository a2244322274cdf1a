"""Why a target has no position: for each symbol the day's targets weight (not zero) that an
account does not hold at its last snapshot of the day, the first reason that applies, in
the order of ``Reason``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from candlekeep.accounts.datasets import FILLS, OPEN_ORDERS_SNAPSHOTS, ORDERS
from candlekeep.reports.hyperliquid.common import (
    MissingParams,
    Snapshot,
    accounts,
    arrow_sql,
    day_bounds,
    day_name,
    last_snapshots,
    listed,
    markets,
    params_of,
    pct,
    read_targets,
    store_name,
)
from candlekeep.reports.hyperliquid.targets import positions_at
from candlekeep.reports.sections import Column, Format, Row, Section, SectionInput

if TYPE_CHECKING:
    from candlekeep.stores.base import Store


class Reason(StrEnum):
    """Why a target has no position; the first that applies, in this order."""

    NO_MARKET_METADATA = "no_market_metadata"
    """The coin has no market context that day: not listed (or its name is wrong)."""
    BELOW_MIN_NOTIONAL = "below_min_notional"
    """|target weight as stored| x equity is below the smallest order value."""
    REDUCE_ONLY_ORDERS = "reduce_only_orders"
    """Orders for it were placed that day, every one reduce-only (they cannot open)."""
    ORDERS_CANCELLED = "orders_cancelled"
    """Orders for it were placed that day, every one cancelled or rejected."""
    FILLED_NO_POSITION = "filled_no_position"
    """It traded that day but was flat at the snapshot."""
    OPEN_ORDER_NO_POSITION = "open_order_no_position"
    """An order for it was still resting at the snapshot."""
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Activity:
    """A coin's orders and fills on the day, up to the account's last snapshot."""

    orders: int = 0
    reduce_only: int = 0
    cancelled: int = 0
    fills: int = 0
    fill_notional: float = 0.0
    resting: int = 0
    """Orders open at the snapshot."""


@dataclass(frozen=True, slots=True)
class MissingPosition:
    account: str
    address: str
    symbol: str
    target_weight: float
    """As the targets table has it."""
    target_notional: float | None
    """|target weight| x equity (USD); None without equity."""
    reason: Reason
    activity: Activity


@dataclass(frozen=True, slots=True)
class AccountMissing:
    account: str
    address: str
    snapshot_ms: int | None
    equity: float | None
    missing: list[MissingPosition]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class MissingReport:
    day: str
    table: str
    min_notional: float
    accounts: list[AccountMissing]


def diagnose(listed_coin: bool, target_notional: float | None, min_notional: float,
             act: Activity) -> Reason:
    """The first reason that applies (see ``Reason`` for the order)."""
    if not listed_coin:
        return Reason.NO_MARKET_METADATA
    if target_notional is not None and target_notional < min_notional:
        return Reason.BELOW_MIN_NOTIONAL
    if act.orders and act.reduce_only == act.orders:
        return Reason.REDUCE_ONLY_ORDERS
    if act.orders and act.cancelled == act.orders:
        return Reason.ORDERS_CANCELLED
    if act.fills:
        return Reason.FILLED_NO_POSITION
    if act.resting:
        return Reason.OPEN_ORDER_NO_POSITION
    return Reason.UNKNOWN


_ORDERS = (
    "SELECT coin, count(*) AS orders, count(*) FILTER (WHERE reduce_only) AS reduce_only, "
    "count(*) FILTER (WHERE lower(status) LIKE '%cancel%' OR lower(status) LIKE '%rejected%') "
    "AS cancelled, count(*) FILTER (WHERE lower(status) = 'open') AS open FROM orders "
    "GROUP BY coin")
_FILLS = ("SELECT coin, count(*) AS fills, sum(px * sz) AS notional FROM fills "
          "GROUP BY coin")
_RESTING = "SELECT coin, count(*) AS resting FROM open_orders GROUP BY coin"


def activity(st: Store, address: str, lo: int, snap: Snapshot) -> dict[str, Activity]:
    """Per coin: the day's orders (placed from ``lo`` to the snapshot, with their latest
    status), its fills in that time, and the orders resting at the snapshot (the open
    orders snapshot of that time, or an order whose latest status is open)."""
    hi = snap.ts_ms + 1
    who = {"address": address}
    orders = st.read(ORDERS, where=who, column="order_time", lo=lo, hi=hi)
    fills = st.read(FILLS, where=who, column="time", lo=lo, hi=hi)
    resting = st.read(OPEN_ORDERS_SNAPSHOTS, where={**who, "snapshot_ts": snap.ts_ms})
    out: dict[str, dict[str, float]] = {}
    for r in arrow_sql(_ORDERS, orders=orders).to_pylist():
        out.setdefault(r["coin"], {}).update(
            orders=r["orders"], reduce_only=r["reduce_only"], cancelled=r["cancelled"],
            resting=r["open"])
    for r in arrow_sql(_FILLS, fills=fills).to_pylist():
        out.setdefault(r["coin"], {}).update(fills=r["fills"], fill_notional=r["notional"])
    for r in arrow_sql(_RESTING, open_orders=resting).to_pylist():
        d = out.setdefault(r["coin"], {})
        d["resting"] = max(d.get("resting", 0), r["resting"])
    return {coin: Activity(orders=int(d.get("orders", 0)),
                           reduce_only=int(d.get("reduce_only", 0)),
                           cancelled=int(d.get("cancelled", 0)), fills=int(d.get("fills", 0)),
                           fill_notional=float(d.get("fill_notional") or 0.0),
                           resting=int(d.get("resting", 0)))
            for coin, d in out.items()}


def compute(inp: SectionInput, params: MissingParams) -> MissingReport:
    lo, hi = day_bounds(inp.now_ms, params.day)
    day = day_name(lo)
    st = inp.runtime.store(store_name(inp, params.store, "store"))
    snaps, seen = last_snapshots(st, lo, hi)
    targets = read_targets(inp, params, lo, hi)
    listing = markets(st, lo, hi)
    out = []
    for acct in accounts(inp, params, seen):
        snap = snaps.get(acct.address)
        if snap is None:
            out.append(AccountMissing(acct.name, acct.address, None, None, [],
                                      f"no account snapshot on {day}"))
            continue
        market = listed(listing, acct.source)
        target = {s: w for s, w in targets.of(day, market).items() if w}
        if not target:
            out.append(AccountMissing(acct.name, acct.address, snap.ts_ms, snap.equity, [],
                                      f"no targets for {day} in table {params.table}"))
            continue
        if not market:
            # No market contexts stored that day (hyperliquid_accounts without markets:
            # true): every target would read "no market metadata", which is not the cause.
            out.append(AccountMissing(
                acct.name, acct.address, snap.ts_ms, snap.equity, [],
                f"no market contexts stored on {day}: run hyperliquid_accounts with "
                "markets: true to diagnose missing positions"))
            continue
        held = positions_at(st, acct.address, snap)
        absent = sorted(s for s in target if not held.get(s))
        acts = activity(st, acct.address, lo, snap) if absent else {}
        found = []
        for s in absent:
            w = target[s]
            notional = abs(w) * snap.equity if snap.equity is not None else None
            act = acts.get(s, Activity())
            found.append(MissingPosition(
                acct.name, acct.address, s, w, notional,
                diagnose(s.upper() in market, notional, params.min_notional, act), act))
        out.append(AccountMissing(acct.name, acct.address, snap.ts_ms, snap.equity, found))
    return MissingReport(day, params.table, params.min_notional, out)


COLUMNS = (Column("account"), Column("symbol"), Column("target", Format.PERCENT),
           Column("target notional", Format.NUMBER), Column("reason"),
           Column("detail", max_chars=300))


def _detail(m: MissingPosition, min_notional: float) -> str:
    a = m.activity
    if m.reason is Reason.NO_MARKET_METADATA:
        return "no market context that day: not listed, or a misspelt symbol"
    if m.reason is Reason.BELOW_MIN_NOTIONAL:
        return f"below the {min_notional:,.2f} minimum order value"
    parts = []
    if a.orders:
        parts.append(f"{a.orders} order(s) that day: {a.reduce_only} reduce-only, "
                     f"{a.cancelled} cancelled or rejected")
    if a.fills:
        parts.append(f"{a.fills} fill(s), {a.fill_notional:,.2f} notional")
    if a.resting:
        parts.append(f"{a.resting} resting at the snapshot")
    return "; ".join(parts) or "no orders or fills that day"


def rows(report: MissingReport) -> list[Row]:
    out: list[Row] = []
    for a in report.accounts:
        if a.problem:
            out.append((a.account, None, None, None, None, a.problem))
        for m in a.missing:
            out.append((m.account, m.symbol, pct(m.target_weight), m.target_notional,
                        m.reason.value, _detail(m, report.min_notional)))
    return out


def headline(rows_: list[Row]) -> str | None:
    n = sum(1 for r in rows_ if r[1] is not None)
    return None if not n else f"{n} target{'s' if n != 1 else ''} without a position"


def _rows(inp: SectionInput) -> list[Row]:
    return rows(compute(inp, params_of(inp, SECTION)))


SECTION = Section(
    name="hyperliquid_missing_positions", title="Targets without a position",
    columns=COLUMNS, rows=_rows,
    note="Each target of the day with no position at the account's last snapshot, and the "
    "first reason that applies: no_market_metadata, below_min_notional, reduce_only_orders, "
    "orders_cancelled, filled_no_position, open_order_no_position, unknown.",
    empty="Every target has a position.", limit=100,
    headline=lambda r: headline(list(r)), params=MissingParams)
