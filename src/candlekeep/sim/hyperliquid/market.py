"""Market-wide truth: prices, candles and hourly funding rates, pure functions of the seed.

Prices come from the sim's candle generator (``candlekeep.sim.generator``) under the
unified symbols ``BTC/USDC:USDC`` (perps) and ``PURR/USDC`` (spot), so a candle, a fill and
a mark price at the same minute agree: a fill at time t trades at the generator's price of
t's minute, the open of t's 1m candle. Funding is settled every hour, a few hundred
milliseconds after the hour as on Hyperliquid (``1704290400031``). Order books (``l2Book``)
are the shared sim books of ``candlekeep.sim.orderbook`` (mid at the last closed 1m close),
cut to Hyperliquid's 20 levels a side with sizes in the coin's ``szDecimals``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from candlekeep.core.timeframes import HOUR_MS, MINUTE_MS, parse_timeframe
from candlekeep.sim.generator import (
    F64,
    I64,
    CandleArrays,
    CandleGenerator,
    normal,
    price_decimals,
    stable_hash64,
    uniform,
)
from candlekeep.sim.hyperliquid.spec import HyperliquidSpec, PerpSpec
from candlekeep.sim.orderbook import order_book

INTEREST_PER_HOUR = 0.0000125
"""Hyperliquid's interest component: 0.01 % per 8 hours, paid hourly."""
FUNDING_CAP_PER_HOUR = 0.04
FUNDING_OFFSET_MAX_MS = 400
BOOK_LEVELS = 20
"""l2Book answers at most 20 levels a side (info endpoint docs, "L2 book snapshot")."""
MAX_ORDERS_PER_LEVEL = 12


@dataclass(frozen=True, slots=True)
class HlBook:
    """One l2Book snapshot: ``bids`` descending and ``asks`` ascending ``[px, sz]`` rows,
    and the number of orders resting at each level."""

    coin: str
    time: int
    bids: F64
    asks: F64
    bid_orders: I64
    ask_orders: I64


class HlMarkets:
    """Perp and spot markets of one spec, priced by one seed's generator."""

    def __init__(self, seed: int, spec: HyperliquidSpec,
                 generator: CandleGenerator | None = None) -> None:
        self.seed = seed
        self.spec = spec
        self.generator = generator or CandleGenerator(seed)
        self.perps: dict[str, PerpSpec] = {p.name: p for p in spec.perps}
        # Spot pairs by universe index: PURR/USDC is index 0 and named so; others are @i.
        self.spot_names: list[str] = []
        self.spot_symbols: list[str] = []
        for i, token in enumerate(spec.spot_tokens):
            self.spot_names.append(f"{token.name}/USDC" if i == 0 else f"@{i}")
            self.spot_symbols.append(f"{token.name}/USDC")

    # ------------------------------------------------------------------ names

    def symbol_of(self, coin: str) -> str | None:
        """The generator symbol behind a request's ``coin``: a perp name, ``PURR/USDC`` or
        ``@index``; None when the sim does not list it."""
        perp = self.perps.get(coin)
        if perp is not None:
            return perp.symbol
        if coin in self.spot_names:
            return self.spot_symbols[self.spot_names.index(coin)]
        return None

    def decimals(self, symbol: str) -> int:
        """Decimals of the symbol's price tick (the generator rounds prices to it)."""
        return price_decimals(self.seed, symbol)

    def sz_decimals(self, coin: str) -> int:
        """``szDecimals`` of a listed coin (a spot pair's are its base token's)."""
        perp = self.perps.get(coin)
        if perp is not None:
            return perp.sz_decimals
        return self.spec.spot_tokens[self.spot_names.index(coin)].sz_decimals

    # ------------------------------------------------------------------ books

    def book(self, coin: str, now_ms: int) -> HlBook | None:
        """``coin``'s l2Book at ``now_ms`` (None when the sim does not list it): the shared
        sim book of its market, sizes rounded to ``szDecimals`` (at least one step), 1 to
        12 orders a level drawn per minute."""
        symbol = self.symbol_of(coin)
        if symbol is None:
            return None
        shared = order_book(self.generator, symbol, now_ms, BOOK_LEVELS)
        step_decimals = self.sz_decimals(coin)
        minute = now_ms - now_ms % MINUTE_MS

        def sized(rows: F64) -> F64:
            sz = np.maximum(np.round(rows[:, 1], step_decimals), 10.0 ** -step_decimals)
            return np.column_stack([rows[:, 0], sz])

        def orders(side: str, n: int) -> I64:
            key = stable_hash64("hl-book-orders", self.seed, coin, side, minute)
            u = uniform(key, np.arange(n, dtype=np.int64))
            return 1 + (u * MAX_ORDERS_PER_LEVEL).astype(np.int64)

        return HlBook(coin, now_ms, sized(shared.bids), sized(shared.asks),
                      orders("bid", len(shared.bids)), orders("ask", len(shared.asks)))

    # ------------------------------------------------------------------ prices

    def prices(self, symbol: str, t_ms: I64) -> F64:
        """The price at each time: the generator's price at the start of its minute."""
        t = np.asarray(t_ms, dtype=np.int64)
        return self.generator.price_at(symbol, t - t % MINUTE_MS)

    def price(self, symbol: str, t_ms: int) -> float:
        return float(self.prices(symbol, np.array([t_ms], dtype=np.int64))[0])

    def minute_range(self, symbol: str, t_ms: I64) -> tuple[F64, F64]:
        """(low, high) of the 1m candle holding each time."""
        t = np.asarray(t_ms, dtype=np.int64)
        arrays = self.generator.arrays(symbol, "1m", t - t % MINUTE_MS)
        return arrays.low, arrays.high

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int,
                now_ms: int) -> CandleArrays:
        """candleSnapshot's candles: open time from the candle holding ``start_ms`` to the
        one holding ``end_ms`` (the current, still open candle included), never before the
        listing and only within the most recent ``candle_horizon`` candles."""
        tf = parse_timeframe(interval)
        now_open = tf.floor(now_ms)
        first = max(tf.floor(start_ms), now_open - (self.spec.candle_horizon - 1) * tf.ms,
                     tf.floor(self.spec.listing_ms))
        last = min(tf.floor(end_ms), now_open)
        ts = (np.arange(first, last + 1, tf.ms, dtype=np.int64) if last >= first
              else np.empty(0, np.int64))
        return self.generator.arrays(symbol, interval, ts)

    # ------------------------------------------------------------------ funding

    def _funding_key(self, coin: str) -> int:
        return stable_hash64("hl-funding", self.seed, coin)

    def funding_times(self, coin: str, hours: I64) -> I64:
        """Settlement time of each hour index (hour start plus a few hundred ms)."""
        offset = (uniform(self._funding_key(coin) ^ 0x5, hours)
                  * FUNDING_OFFSET_MAX_MS).astype(np.int64)
        return hours * HOUR_MS + offset

    def funding_rates(self, coin: str, hours: I64) -> tuple[F64, F64]:
        """(fundingRate, premium) settled at each hour index, rounded to 8 decimals."""
        key = self._funding_key(coin)
        premium = np.round(0.00025 * normal(key ^ 0x1, hours), 8)
        rate = np.clip(INTEREST_PER_HOUR + premium / 8.0 + 0.00001 * normal(key ^ 0x2, hours),
                       -FUNDING_CAP_PER_HOUR, FUNDING_CAP_PER_HOUR)
        return np.round(rate, 8), premium

    def funding_history(self, coin: str, start_ms: int, end_ms: int, now_ms: int,
                        limit: int | None = None) -> tuple[I64, F64, F64]:
        """(time, fundingRate, premium) settled in ``[start_ms, end_ms]`` by ``now_ms``,
        oldest first, at most ``limit``."""
        end_ms = min(end_ms, now_ms)
        first_hour = max(start_ms // HOUR_MS, -(-self.spec.listing_ms // HOUR_MS))
        last_hour = end_ms // HOUR_MS
        if limit is not None:
            last_hour = min(last_hour, first_hour + limit + 1)
        if last_hour < first_hour:
            empty = np.empty(0, np.float64)
            return np.empty(0, np.int64), empty, empty
        hours = np.arange(first_hour, last_hour + 1, dtype=np.int64)
        times = self.funding_times(coin, hours)
        keep = (times >= start_ms) & (times <= end_ms)
        hours, times = hours[keep], times[keep]
        if limit is not None:
            hours, times = hours[:limit], times[:limit]
        rate, premium = self.funding_rates(coin, hours)
        return times, rate, premium
