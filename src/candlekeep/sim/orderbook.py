"""Simulated order books: a pure function of (seed, symbol, time), consistent with the candles.

Mid is the close of the last closed 1-minute candle (the generator's price at the start of
the current minute), so a book and the candles of the same moment agree. Each base asset
has a liquidity drawn from the seed: it sets the spread (2 to 120 bps, tighter when liquid),
the quote depth on each side within ±2 % of mid (10 k to about 3 M), and the gap between
levels (4 to 10 bps, so that a 100-level book covers the ±2 % band). A symbol passes a
50 bps / 100 k gate exactly when its liquidity is above 0.4: some do and some do not.
Quantities carry per-minute noise, so two snapshots a minute apart differ.

Weights are Binance's: spot ``/api/v3/depth`` 5, 25, 50 or 250 by limit (1-100, 101-500,
501-1000, 1001-5000); USDⓈ-M ``/fapi/v1/depth`` 2, 5, 10 or 20 (limit ≤ 50, 100, 500,
1000).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.sim.generator import (
    F64,
    CandleGenerator,
    base_asset,
    price_decimals,
    stable_hash64,
    uniform,
)

if TYPE_CHECKING:
    from candlekeep.sim.exchange import Api, SimExchange

SPOT_DEPTH_LIMITS = (1, 5000)
"""Spot: any limit from 1; above 5000 is served as 5000 (default 100)."""
FAPI_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
"""USDⓈ-M: these limits only (default 500)."""
BAND = 0.02


@dataclass(frozen=True, slots=True)
class BookProfile:
    """One base asset's book shape (the same on every market of the asset)."""

    liquidity: float
    spread_bps: float
    depth_quote: float
    """Quote value on each side within ±2 % of mid (before per-minute noise)."""
    step_bps: float


@dataclass(frozen=True, slots=True)
class SimBook:
    """A snapshot: ``bids`` descending and ``asks`` ascending, ``[price, qty]`` rows."""

    last_update_id: int
    bids: F64
    asks: F64


def profile(seed: int, symbol: str) -> BookProfile:
    """The book shape of ``symbol``'s base asset for ``seed``."""
    key = stable_hash64("book", seed, base_asset(symbol))
    u = uniform(key, np.arange(2, dtype=np.int64))
    liquidity = float(u[0])
    return BookProfile(liquidity, 2.0 + 118.0 * (1.0 - liquidity) ** 2,
                       10.0 ** (4.0 + 2.5 * liquidity), 4.0 + 6.0 * float(u[1]))


def order_book(generator: CandleGenerator, symbol: str, now_ms: int, levels: int) -> SimBook:
    """``levels`` levels a side of ``symbol``'s book at ``now_ms``."""
    seed = generator.seed
    shape = profile(seed, symbol)
    minute = now_ms - now_ms % MINUTE_MS
    mid = float(generator.price_at(symbol, np.array([minute], dtype=np.int64))[0])
    decimals = price_decimals(seed, symbol)
    tick = 10.0 ** -decimals
    index = np.arange(levels, dtype=np.int64)
    offset = shape.spread_bps / 2e4 + index * shape.step_bps / 1e4
    bid_px = np.floor(np.round(mid * (1.0 - offset) / tick, 6)) * tick
    ask_px = np.ceil(np.round(mid * (1.0 + offset) / tick, 6)) * tick
    in_band = max(1.0, (BAND - shape.spread_bps / 2e4) / (shape.step_bps / 1e4) + 1.0)
    per_level = shape.depth_quote / in_band
    noise_bid = 0.5 + uniform(stable_hash64("book-bid", seed, symbol, minute), index)
    noise_ask = 0.5 + uniform(stable_hash64("book-ask", seed, symbol, minute), index)
    bid_qty = np.maximum(np.round(per_level * noise_bid / mid, 5), 1e-5)
    ask_qty = np.maximum(np.round(per_level * noise_ask / mid, 5), 1e-5)
    keep_bid = bid_px > 0  # a deep book of a cheap coin ends at one tick
    return SimBook(now_ms // 100,
                   np.column_stack([np.round(bid_px[keep_bid], decimals), bid_qty[keep_bid]]),
                   np.column_stack([np.round(ask_px, decimals), ask_qty]))


def depth_weight(api: Api, limit: str | None) -> int:
    """The weight of a depth request as the server counts it (a bad limit: the default's)."""
    try:
        n = int(limit) if limit is not None else None
    except ValueError:
        n = None
    if api == "spot":
        return spot_depth_weight(100 if n is None else n)
    return fapi_depth_weight(500 if n is None else n)


def depth_reply(exchange: SimExchange, api: Api, query: Mapping[str, str]) -> tuple[int, str]:
    """``GET /api/v3/depth`` (spot) or ``/fapi/v1/depth``: status and JSON body, errors in
    Binance's ``{"code", "msg"}`` form."""
    market_id = query.get("symbol")
    if not market_id:
        return 400, _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                           "or malformed.")
    try:
        limit = int(query.get("limit", "100" if api == "spot" else "500"))
    except ValueError:
        return 400, _error(-1100, "Illegal characters found in a parameter.")
    if api == "spot":
        if limit < SPOT_DEPTH_LIMITS[0]:
            return 400, _error(-1130, "Invalid data sent for a parameter.")
        limit = min(limit, SPOT_DEPTH_LIMITS[1])
    elif limit not in FAPI_DEPTH_LIMITS:
        return 400, _error(-1130, "Invalid data sent for a parameter.")
    market = exchange.market_by_id(api, market_id)
    if market is None or not market.in_exchange_info:
        return 400, _error(-1121, "Invalid symbol.")
    book = exchange.order_book(market.symbol, limit)
    decimals = market.price_decimals
    body = (f'{{"lastUpdateId":{book.last_update_id},'
            f'"bids":{format_levels(book.bids, decimals)},'
            f'"asks":{format_levels(book.asks, decimals)}')
    if api == "fapi":
        now = exchange.clock.now_ms()
        body += f',"E":{now},"T":{now}'
    return 200, body + "}"


def _error(code: int, msg: str) -> str:
    return json.dumps({"code": code, "msg": msg})


def spot_depth_weight(limit: int) -> int:
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def fapi_depth_weight(limit: int) -> int:
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def format_levels(rows: F64, decimals: int) -> str:
    """``[["price","qty"],...]`` with Binance's fixed decimals (qty 8 on spot)."""
    return "[" + ",".join(f'["{p:.{decimals}f}","{q:.8f}"]' for p, q in rows.tolist()) + "]"


__all__ = ["FAPI_DEPTH_LIMITS", "SPOT_DEPTH_LIMITS", "BookProfile", "SimBook",
           "depth_reply", "depth_weight", "fapi_depth_weight", "format_levels", "order_book",
           "profile", "spot_depth_weight"]
