"""Each account's trades (fills) in the report's window: how many, in which coins, gross
notional (Σ px x sz), realised PnL (Σ closed PnL), fees, and the largest by notional."""

from __future__ import annotations

from dataclasses import dataclass, field

from candlekeep.accounts.datasets import FILLS
from candlekeep.reports.hyperliquid.common import (
    TradesParams,
    accounts,
    arrow_sql,
    params_of,
    store_name,
)
from candlekeep.reports.sections import Column, Format, Row, Section, SectionInput


@dataclass(frozen=True, slots=True)
class Trade:
    time_ms: int
    coin: str
    side: str
    """``B`` (buy) or ``A`` (sell), as Hyperliquid says."""
    dir: str | None
    """``Open Long``, ``Close Short``, …"""
    px: float
    sz: float
    notional: float
    closed_pnl: float
    fee: float
    tid: int


@dataclass(frozen=True, slots=True)
class AccountTrades:
    account: str
    address: str
    trades: int
    symbols: list[str]
    gross_notional: float
    realized_pnl: float
    fees: float
    top: list[Trade] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TradesReport:
    since_ms: int
    now_ms: int
    accounts: list[AccountTrades]


_TOTALS = (
    "SELECT count(*) AS n, coalesce(list(DISTINCT coin ORDER BY coin), []) AS symbols, "
    "coalesce(sum(px * sz), 0) AS gross, coalesce(sum(closed_pnl), 0) AS pnl, "
    "coalesce(sum(fee) FILTER (WHERE coalesce(fee_token, 'USDC') = 'USDC'), 0) AS fees "
    "FROM fills")
_TOP = (
    "SELECT epoch_ms(time) AS time_ms, coin, side, dir, px, sz, px * sz AS notional, "
    "coalesce(closed_pnl, 0) AS closed_pnl, coalesce(fee, 0) AS fee, tid FROM fills "
    "ORDER BY px * sz DESC, time, tid LIMIT ?")


def compute(inp: SectionInput, params: TradesParams) -> TradesReport:
    """Fills with ``since_ms <= time <= now_ms``, read per account."""
    st = inp.runtime.store(store_name(inp, params.store, "store"))
    out = []
    for acct in accounts(inp, params):
        fills = st.read(FILLS, where={"address": acct.address}, column="time",
                        lo=inp.since_ms, hi=inp.now_ms + 1)
        (tot,) = arrow_sql(_TOTALS, fills=fills).to_pylist()
        top = [Trade(**r) for r in arrow_sql(_TOP, [params.top], fills=fills).to_pylist()]
        out.append(AccountTrades(acct.name, acct.address, int(tot["n"]), list(tot["symbols"]),
                                 float(tot["gross"]), float(tot["pnl"]), float(tot["fees"]),
                                 top))
    return TradesReport(inp.since_ms, inp.now_ms, out)


COLUMNS = (Column("account"), Column("trades", Format.COUNT), Column("symbols", max_chars=200),
           Column("gross notional", Format.NUMBER), Column("realised PnL", Format.NUMBER),
           Column("fees", Format.NUMBER), Column("largest trades", max_chars=600))


def _trade(t: Trade) -> str:
    what = t.dir or ("buy" if t.side == "B" else "sell")
    return f"{t.coin} {what} {t.sz:g} @ {t.px:,.6g} = {t.notional:,.2f}"


def rows(report: TradesReport) -> list[Row]:
    return [(a.account, a.trades, ", ".join(a.symbols) or None, a.gross_notional,
             a.realized_pnl, a.fees, "; ".join(_trade(t) for t in a.top) or None)
            for a in report.accounts]


def _rows(inp: SectionInput) -> list[Row]:
    return rows(compute(inp, params_of(inp, SECTION)))


SECTION = Section(
    name="hyperliquid_trades", title="Trades", columns=COLUMNS, rows=_rows,
    note="Fills in the report's window per account: gross notional Σ price x size, "
    "realised PnL Σ closed PnL, fees paid in USDC (spot fees in other tokens are not added);"
    " the largest trades by notional.",
    empty="No Hyperliquid accounts configured.", limit=100, params=TradesParams)
