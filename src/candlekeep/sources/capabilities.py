"""What each exchange allows, as keyword data: candles per request, request weights, the
rate budget, how far back its history reaches. Paging and pacing follow from these.

An exchange missing from ``EXCHANGES`` gets what CCXT declares about it (see
``CcxtSource``); an entry overrides only the keys it names, so a one-key entry (Kraken's
history horizon) keeps everything else CCXT knows.

Imported by the config loader and the coverage view, so it must stay free of CCXT, pyarrow
and anything else slow to import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from candlekeep.core.timeframes import TIMEFRAMES, parse_timeframe

WeightFn = Callable[[str, Mapping[str, Any]], int]


def binance_spot_weight(path: str, params: Mapping[str, Any]) -> int:
    """Binance spot request weights (klines 2 at any limit; exchangeInfo 20; depth 5, 25,
    50 or 250 by limit)."""
    if path == "klines":
        return 2
    if path == "depth":
        limit = int(params.get("limit", 100))
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if path == "exchangeInfo":
        return 20
    return 1 if path in ("ping", "time") else 2


def binance_futures_weight(path: str, params: Mapping[str, Any]) -> int:
    """Binance USDⓈ-M and COIN-M futures weights: klines and depth by limit, exchangeInfo
    1."""
    if path == "depth":
        limit = int(params.get("limit", 500))
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    if path == "klines":
        limit = int(params.get("limit", 500))
        if limit < 100:
            return 1
        if limit < 500:
            return 2
        if limit <= 1000:
            return 5
        return 10
    return 1


def unit_weight(path: str, params: Mapping[str, Any]) -> int:
    return 1


@cache
def best_page_limit(max_limit: int, weight: WeightFn) -> int:
    """The limit with the most candles per unit of weight (the largest such on ties)."""
    best, best_ratio = 1, 0.0
    for n in range(1, max_limit + 1):
        ratio = n / max(1, weight("klines", {"limit": n}))
        if ratio >= best_ratio:
            best, best_ratio = n, ratio
    return best


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one exchange's market type allows.

    ``klines_method`` names CCXT's raw endpoint returning Binance-style 12-field rows, which
    keeps quote volume and trade count (``fetch_ohlcv`` drops them) and skips CCXT's
    per-row parsing; None means ``fetch_ohlcv`` with ``end_param`` for the page end.
    """

    max_limit: int = 100
    """Candles one request may return."""
    weight: WeightFn = unit_weight
    budget: int = 60
    """Request weight allowed per ``window_s``."""
    window_s: float = 60.0
    history_limit: int | None = None
    """Candles back from now the exchange serves at all (Hyperliquid 5,000, Kraken 720):
    older history exists only where someone stored it in time."""
    max_span_ms: int | None = None
    """Longest startTime..endTime one request may span (COIN-M: 200 days)."""
    concurrent_pages: bool = True
    """False fetches a range's pages one after another (the in-process sim, whose late-data
    bookkeeping depends on the order of replies)."""
    inverse: bool = False
    """Klines count volume in contracts: the base volume is column 7 (as CCXT reads it) and
    the quote volume is contracts times the contract size."""
    klines_method: str | None = None
    end_param: str | None = "until"
    markets_types: tuple[str, ...] | None = None
    """Binance's ``options.fetchMarkets.types``: load only this market type's markets."""

    def page_limit(self, timeframe: str) -> int:
        """Candles per request: the most per unit of weight, within the span a request may
        cover."""
        limit = best_page_limit(self.max_limit, self.weight)
        if self.max_span_ms is None or timeframe not in TIMEFRAMES:
            return limit
        return max(1, min(limit, self.max_span_ms // parse_timeframe(timeframe).ms))

    def horizon_ms(self, timeframe: str, now_ms: int) -> int | None:
        """Open time of the oldest candle the exchange still serves, None if unlimited."""
        if self.history_limit is None:
            return None
        tf = parse_timeframe(timeframe)
        return tf.floor(now_ms) - (self.history_limit - 1) * tf.ms


_BINANCE_SPOT: dict[str, Any] = dict(
    max_limit=1000, weight=binance_spot_weight, budget=6000, window_s=60.0,
    klines_method="publicGetKlines", end_param="endTime", markets_types=("spot",))
_BINANCE_USDM: dict[str, Any] = dict(
    max_limit=1500, weight=binance_futures_weight, budget=2400, window_s=60.0,
    klines_method="fapiPublicGetKlines", end_param="endTime", markets_types=("linear",))
_BINANCE_COINM: dict[str, Any] = dict(
    max_limit=1500, weight=binance_futures_weight, budget=2400, window_s=60.0,
    klines_method="dapiPublicGetKlines", end_param="endTime", markets_types=("inverse",),
    max_span_ms=200 * 86_400_000, inverse=True)
_HYPERLIQUID: dict[str, Any] = dict(history_limit=5000)


def hyperliquid_candle_weight(path: str, params: Mapping[str, Any]) -> int:
    """A candleSnapshot of ``limit`` candles: 20, plus one per 60 candles returned."""
    from candlekeep.sources.hyperliquid.weights import candle_weight

    return candle_weight(int(params.get("limit", 0)))


HYPERLIQUID_NATIVE = Capabilities(
    max_limit=5000, weight=hyperliquid_candle_weight, budget=1200, window_s=60.0,
    history_limit=5000)
"""The native Hyperliquid source (``type: hyperliquid``): candleSnapshot returns at most the
newest 5,000 candles of a series, so one request of 5,000 covers all there is (20 + 83
weight); REST requests share 1,200 weight a minute per IP. (The CCXT rows below keep only
the horizon: CCXT's own paging and weights stay as CCXT declares them.)"""

EXCHANGES: dict[tuple[str, str], dict[str, Any]] = {
    ("binance", "spot"): _BINANCE_SPOT,
    ("binance", "swap"): _BINANCE_USDM,
    ("binance", "future"): _BINANCE_USDM,
    ("binanceusdm", "swap"): _BINANCE_USDM,
    ("binanceusdm", "future"): _BINANCE_USDM,
    ("binancecoinm", "swap"): _BINANCE_COINM,
    ("binancecoinm", "future"): _BINANCE_COINM,
    ("kraken", "spot"): dict(history_limit=720),
    ("hyperliquid", "spot"): _HYPERLIQUID,
    ("hyperliquid", "swap"): _HYPERLIQUID,
}
"""Per (CCXT exchange id, market type): the keys that differ from what CCXT declares."""


def capabilities(exchange: str, market_type: str,
                 declared: Capabilities | None = None) -> Capabilities:
    """``declared`` (what CCXT says, or the defaults) with this exchange's entry applied."""
    return dataclasses.replace(declared or Capabilities(),
                               **EXCHANGES.get((exchange, market_type), {}))


def known(exchange: str, market_type: str) -> bool:
    """True when ``EXCHANGES`` describes the exchange fully (no CCXT guesswork needed)."""
    return "max_limit" in EXCHANGES.get((exchange, market_type), {})
