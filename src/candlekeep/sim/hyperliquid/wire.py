"""The model's objects in Hyperliquid's JSON, field for field.

Sources for every field name (numbers are strings wherever Hyperliquid sends strings):
the info-endpoint pages of hyperliquid.gitbook.io (perpetuals, spot, userFillsByTime),
the recorded replies in hyperliquid-python-sdk's tests/cassettes/info_test (candles,
clearinghouseState, openOrders, frontendOpenOrders, historicalOrders, userFunding,
fundingHistory) and the reply examples in CCXT's hyperliquid.py (metaAndAssetCtxs,
spotMetaAndAssetCtxs, hourly userFunding with a zero hash and ``nSamples: null``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from candlekeep.core.timeframes import DAY_MS, HOUR_MS, parse_timeframe
from candlekeep.sim.generator import CandleArrays, stable_hash64, uniform
from candlekeep.sim.hyperliquid.accounts import AccountModel
from candlekeep.sim.hyperliquid.market import HlBook, HlMarkets
from candlekeep.sim.hyperliquid.records import (
    ZERO_HASH,
    Fill,
    FundingPayment,
    LedgerEvent,
    Order,
    fmt_num,
)


def fill_wire(f: Fill) -> dict[str, Any]:
    out: dict[str, Any] = {
        "coin": f.coin, "px": fmt_num(f.px, f.px_decimals), "sz": fmt_num(f.sz, f.sz_decimals),
        "side": f.side, "time": f.time,
        "startPosition": fmt_num(f.start_position, f.sz_decimals), "dir": f.dir,
        "closedPnl": fmt_num(f.closed_pnl, 6), "hash": f.hash, "oid": f.oid,
        "crossed": f.crossed, "fee": fmt_num(f.fee, 6), "tid": f.tid, "feeToken": "USDC",
    }
    if f.builder_fee is not None:
        out["builderFee"] = fmt_num(f.builder_fee, 6)
    return out


def aggregate_by_time(fills: list[Fill]) -> list[dict[str, Any]]:
    """``aggregateByTime``: the pieces of one crossing order filled at one time become one
    fill (sizes, PnL and fees summed, price size-weighted, the first piece's tid and start
    position). Resting fills are never combined."""
    out: list[dict[str, Any]] = []
    group: list[Fill] = []

    def flush() -> None:
        if not group:
            return
        first = group[0]
        if len(group) == 1:
            out.append(fill_wire(first))
        else:
            sz = sum(f.sz for f in group)
            row = fill_wire(first)
            row["px"] = fmt_num(sum(f.px * f.sz for f in group) / sz, first.px_decimals)
            row["sz"] = fmt_num(sz, first.sz_decimals)
            row["closedPnl"] = fmt_num(sum(f.closed_pnl for f in group), 6)
            row["fee"] = fmt_num(sum(f.fee for f in group), 6)
            if first.builder_fee is not None:
                row["builderFee"] = fmt_num(sum(f.builder_fee or 0.0 for f in group), 6)
            out.append(row)
        group.clear()

    for f in fills:
        if group and not (f.crossed and f.oid == group[0].oid and f.time == group[0].time):
            flush()
        group.append(f)
    flush()
    return out


def open_order_wire(o: Order) -> dict[str, Any]:
    """openOrders' short form."""
    return {"coin": o.coin, "limitPx": fmt_num(o.limit_px, o.px_decimals), "oid": o.oid,
            "side": o.side, "sz": fmt_num(o.sz, o.sz_decimals), "timestamp": o.timestamp}


def frontend_order_wire(o: Order, now_ms: int) -> dict[str, Any]:
    """frontendOpenOrders' (and historicalOrders' ``order``) long form; ``sz`` is what
    remains: all of it while open or after a cancel, nothing once filled."""
    remaining = 0.0 if o.status(now_ms) == "filled" else o.sz
    return {
        "coin": o.coin, "side": o.side, "limitPx": fmt_num(o.limit_px, o.px_decimals),
        "sz": fmt_num(remaining, o.sz_decimals), "oid": o.oid, "timestamp": o.timestamp,
        "triggerCondition": "N/A", "isTrigger": False, "triggerPx": "0.0", "children": [],
        "isPositionTpsl": False, "reduceOnly": False, "orderType": "Limit",
        "origSz": fmt_num(o.sz, o.sz_decimals), "tif": o.tif, "cloid": None,
    }


def historical_order_wire(o: Order, now_ms: int) -> dict[str, Any]:
    return {"order": frontend_order_wire(o, now_ms), "status": o.status(now_ms),
            "statusTimestamp": o.status_timestamp(now_ms)}


def funding_wire(p: FundingPayment) -> dict[str, Any]:
    return {"time": p.time, "hash": ZERO_HASH, "delta": {
        "type": "funding", "coin": p.coin, "usdc": fmt_num(p.usdc, 6),
        "szi": fmt_num(p.szi, p.sz_decimals), "fundingRate": fmt_num(p.funding_rate, 8),
        "nSamples": None}}


def ledger_wire(e: LedgerEvent) -> dict[str, Any]:
    return {"time": e.time, "hash": e.hash, "delta": e.delta}


def clearinghouse_state(model: AccountModel | None, markets: HlMarkets,
                        now_ms: int) -> dict[str, Any]:
    """The perp account summary at ``now_ms`` (all zeros for an unknown or idle user).

    Cross margin throughout: margin used = position value / leverage, maintenance margin
    = position value / (2 x max leverage), liquidation price where account value would meet
    maintenance margin if only that coin moved.
    """
    positions = model.positions(now_ms) if model is not None else []
    cash = model.cash(now_ms) if model is not None else 0.0
    leverage = model.account.leverage if model is not None else 1
    marks = {p.coin: markets.price(markets.perps[p.coin].symbol, now_ms) for p in positions}
    unrealized = {p.coin: p.szi * (marks[p.coin] - p.entry_px) for p in positions}
    account_value = cash + sum(unrealized.values())
    ntl = sum(abs(p.szi) * marks[p.coin] for p in positions)
    signed_ntl = sum(p.szi * marks[p.coin] for p in positions)
    margin = {p.coin: abs(p.szi) * marks[p.coin] / min(leverage,
                                                       markets.perps[p.coin].max_leverage)
              for p in positions}
    maint = {p.coin: abs(p.szi) * marks[p.coin] / (2 * markets.perps[p.coin].max_leverage)
             for p in positions}
    total_margin = sum(margin.values())
    total_maint = sum(maint.values())
    summary = {"accountValue": fmt_num(account_value, 6), "totalNtlPos": fmt_num(ntl, 6),
               "totalRawUsd": fmt_num(account_value - signed_ntl, 6),
               "totalMarginUsed": fmt_num(total_margin, 6)}
    asset_positions = []
    for p in positions:
        lev = min(leverage, markets.perps[p.coin].max_leverage)
        liq = marks[p.coin] - (account_value - total_maint) / p.szi
        asset_positions.append({"type": "oneWay", "position": {
            "coin": p.coin, "szi": fmt_num(p.szi, p.sz_decimals),
            "leverage": {"type": "cross", "value": lev},
            "entryPx": fmt_num(p.entry_px, p.px_decimals + 2),
            "positionValue": fmt_num(abs(p.szi) * marks[p.coin], 6),
            "unrealizedPnl": fmt_num(unrealized[p.coin], 6),
            "returnOnEquity": fmt_num(
                unrealized[p.coin] / (abs(p.szi) * p.entry_px / lev), 8),
            "liquidationPx": fmt_num(liq, 8) if liq > 0 else None,
            "marginUsed": fmt_num(margin[p.coin], 6),
            "maxLeverage": markets.perps[p.coin].max_leverage,
            "cumFunding": {"allTime": fmt_num(p.cum_funding_all_time, 6),
                           "sinceOpen": fmt_num(p.cum_funding_since_open, 6),
                           "sinceChange": fmt_num(p.cum_funding_since_change, 6)},
        }})
    return {"marginSummary": summary, "crossMarginSummary": dict(summary),
            "crossMaintenanceMarginUsed": fmt_num(total_maint, 6),
            "withdrawable": fmt_num(max(0.0, account_value - total_margin), 6),
            "assetPositions": asset_positions, "time": now_ms}


def candles_wire(arrays: CandleArrays, coin: str, interval: str,
                 decimals: int) -> list[dict[str, Any]]:
    tf_ms = parse_timeframe(interval).ms
    out = []
    for t, o, h, lo, c, v, n in zip(arrays.ts.tolist(), arrays.open.tolist(),
                                    arrays.high.tolist(), arrays.low.tolist(),
                                    arrays.close.tolist(), arrays.volume.tolist(),
                                    arrays.trades.tolist(), strict=True):
        out.append({"t": t, "T": t + tf_ms - 1, "s": coin, "i": interval,
                    "o": fmt_num(o, decimals), "c": fmt_num(c, decimals),
                    "h": fmt_num(h, decimals), "l": fmt_num(lo, decimals),
                    "v": fmt_num(v, 5), "n": n})
    return out


def l2_book_wire(book: HlBook, px_decimals: int, sz_decimals: int) -> dict[str, Any]:
    """l2Book's reply: ``levels`` is ``[bids, asks]``, best first, each level
    ``{"px", "sz", "n"}`` with prices and sizes as strings."""
    def side(rows: Any, orders: Any) -> list[dict[str, Any]]:
        return [{"px": fmt_num(px, px_decimals), "sz": fmt_num(sz, sz_decimals), "n": n}
                for (px, sz), n in zip(rows.tolist(), orders.tolist(), strict=True)]

    return {"coin": book.coin, "time": book.time,
            "levels": [side(book.bids, book.bid_orders), side(book.asks, book.ask_orders)]}


def meta(markets: HlMarkets) -> dict[str, Any]:
    universe = [{"szDecimals": p.sz_decimals, "name": p.name, "maxLeverage": p.max_leverage,
                 "marginTableId": p.max_leverage} for p in markets.spec.perps]
    tables = sorted({p.max_leverage for p in markets.spec.perps})
    return {"universe": universe, "marginTables": [
        [lev, {"description": "", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": lev}]}]
        for lev in tables]}


def asset_ctxs(markets: HlMarkets, now_ms: int) -> list[dict[str, Any]]:
    """Per perp, in ``meta`` order: mark, oracle, mid and impact prices, the funding rate
    being accrued this hour, open interest and the day's notional volume."""
    out = []
    hour = np.array([now_ms // HOUR_MS], dtype=np.int64)
    for p in markets.spec.perps:
        sym = p.symbol
        d = markets.decimals(sym)
        mark = markets.price(sym, now_ms)
        rate, premium = markets.funding_rates(p.name, hour)
        key = stable_hash64("hl-ctx", markets.seed, p.name)
        noise = float(uniform(key, np.array([now_ms // 60_000], dtype=np.int64))[0])
        oracle = mark * (1 - float(premium[0]))
        hours = np.arange(now_ms // HOUR_MS - 24, now_ms // HOUR_MS, dtype=np.int64) * HOUR_MS
        day = markets.generator.arrays(sym, "1h", hours)
        out.append({
            "dayNtlVlm": fmt_num(float(day.quote_volume.sum()), 6),
            "funding": fmt_num(float(rate[0]), 8),
            "impactPxs": [fmt_num(mark * 0.9998, d), fmt_num(mark * 1.0002, d)],
            "markPx": fmt_num(mark, d), "midPx": fmt_num(mark, d),
            "openInterest": fmt_num(round(2_000_000 * (1 + noise) / mark, p.sz_decimals),
                                    p.sz_decimals),
            "oraclePx": fmt_num(oracle, d), "premium": fmt_num(float(premium[0]), 8),
            "prevDayPx": fmt_num(markets.price(sym, now_ms - DAY_MS), d),
        })
    return out


def spot_meta(markets: HlMarkets) -> dict[str, Any]:
    """Tokens (USDC first, index 0) and pairs: PURR/USDC at index 0, ``@i`` after it."""
    spec = markets.spec
    tokens: list[dict[str, Any]] = [_token("USDC", 8, 8, 0, markets.seed)]
    for i, t in enumerate(spec.spot_tokens, start=1):
        tokens.append(_token(t.name, t.sz_decimals, t.wei_decimals, i, markets.seed))
    universe = [{"tokens": [i + 1, 0], "name": name, "index": i, "isCanonical": i == 0}
                for i, name in enumerate(markets.spot_names)]
    return {"tokens": tokens, "universe": universe}


def _token(name: str, sz: int, wei: int, index: int, seed: int) -> dict[str, Any]:
    token_id = f"0x{stable_hash64('hl-token', seed, name):016x}{stable_hash64('t2', name):016x}"
    return {"name": name, "szDecimals": sz, "weiDecimals": wei, "index": index,
            "tokenId": token_id, "isCanonical": index <= 1, "evmContract": None,
            "fullName": None}
