"""A source over the simulated exchange, in-process: no sockets, same semantics.

It pages, validates and retries exactly as the CCXT source does and meets the same scripted
holes, late data and faults, so jobs (backfill, repair, gap detection) can be tested fast
and deterministically without an HTTP server. Pages are fetched one after another: the
in-process exchange has no latency to hide, and a fixed order keeps late-data bookkeeping
(which reply saw a late candle first) reproducible.
"""

from __future__ import annotations

import asyncio
import random

import pyarrow as pa

from candlekeep.core.clock import Clock
from candlekeep.core.errors import (
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.schema import empty_candles
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from candlekeep.sim.exchange import Api, SimExchange, fapi_klines_weight, spot_klines_weight
from candlekeep.sources.base import MarketInfo, Source
from candlekeep.sources.retry import RetryPolicy, call_with_retry

PAGE_LIMIT = 1000


class SimSource(Source):
    """Candles from a SimExchange (one is made from ``seed`` when none is given).

    ``market_type`` "spot" serves ``BTC/USDT``-style symbols, "swap" the perpetuals
    (``BTC/USDT:USDT``) with futures weights.
    """

    def __init__(
        self,
        name: str,
        seed: int = 7,
        exchange: SimExchange | None = None,
        clock: Clock | None = None,
        *,
        market_type: str = "spot",
        max_attempts: int = 5,
        max_backoff_s: float = 30.0,
    ) -> None:
        super().__init__(name)
        if exchange is None:
            exchange = SimExchange(seed, clock=clock)
        self.exchange = exchange
        self.clock: Clock = clock or exchange.clock
        if market_type not in ("spot", "swap"):
            raise SourceError(f"source {name}: sim market_type must be spot or swap, "
                              f"not {market_type!r}")
        self._api: Api = "spot" if market_type == "spot" else "fapi"
        self.retry_policy = RetryPolicy(max_attempts=max_attempts, max_delay_s=max_backoff_s)
        self._rng = random.Random(seed)

    def supported_timeframes(self) -> set[str]:
        return set(TIMEFRAMES)

    def page_limit(self, timeframe: str) -> int:
        return PAGE_LIMIT

    async def markets(self) -> dict[str, MarketInfo]:
        now = self.clock.now_ms()
        return {
            m.symbol: MarketInfo(m.symbol, m.listing_ms <= now, m.listing_ms, tuple(TIMEFRAMES),
                                  m.market_id)
            for m in self.exchange.markets(self._api)
        }

    async def fetch_candles(self, symbol: str, timeframe: str, start_ms: int,
                            end_ms: int) -> pa.Table:
        tf = self._timeframe(timeframe)
        self._check_symbol(symbol)
        first = tf.ceil(start_ms)
        end = min(end_ms, tf.floor(self.clock.now_ms()))
        if end <= first:
            return empty_candles()
        step = PAGE_LIMIT * tf.ms
        pages: list[pa.Table] = []
        for s in range(first, end, step):
            e = min(s + step, end)
            page = await self._page(symbol, tf, s, e - 1, tf.count(s, e))
            if page.num_rows:
                pages.append(page)
            await asyncio.sleep(0)  # a long backfill must not starve the event loop
        if not pages:
            return empty_candles()
        return pa.concat_tables(pages) if len(pages) > 1 else pages[0]

    async def first_candle_ms(self, symbol: str, timeframe: str, since_ms: int) -> int | None:
        tf = self._timeframe(timeframe)
        self._check_symbol(symbol)
        page = await self._page(symbol, tf, tf.ceil(since_ms), None, 1)
        return int(page["ts"][0].value) if page.num_rows else None

    # ------------------------------------------------------------------ internals

    def _timeframe(self, timeframe: str) -> Timeframe:
        try:
            return parse_timeframe(timeframe)
        except ValueError as exc:
            raise SourceError(f"source {self.name}: {exc}") from None

    def _check_symbol(self, symbol: str) -> None:
        if all(m.symbol != symbol for m in self.exchange.markets(self._api)):
            raise SourceError(f"source {self.name}: invalid symbol {symbol!r} (code -1121)")

    async def _page(self, symbol: str, tf: Timeframe, start: int, end_incl: int | None,
                    limit: int) -> pa.Table:
        def on_retry(retry: int, exc: TransientSourceError, delay: float) -> None:
            self.stats.retries += 1

        try:
            return await call_with_retry(
                lambda: self._request(symbol, tf, start, end_incl, limit),
                policy=self.retry_policy, clock=self.clock, rng=self._rng,
                on_retry=on_retry, what=f"{self.name} {symbol} {tf.name} start={start}")
        except SourceError as exc:
            self.stats.errors.append(str(exc))
            del self.stats.errors[:-50]
            raise

    async def _request(self, symbol: str, tf: Timeframe, start: int, end_incl: int | None,
                       limit: int) -> pa.Table:
        """One simulated HTTP request, with the failures the server would produce."""
        weight = spot_klines_weight(limit) if self._api == "spot" else fapi_klines_weight(limit)
        adm = self.exchange.admit(self._api, "klines", weight)
        self.count_request(weight)
        if adm.status in (418, 429):
            self.stats.rate_limited += 1
            raise RateLimitedError(f"source {self.name}: HTTP {adm.status} ({adm.reason})",
                                   float(adm.retry_after_s or 1))
        if adm.status >= 500:
            raise TransientSourceError(f"source {self.name}: HTTP {adm.status} ({adm.reason})")
        if adm.delay_s > 0:
            await self.clock.sleep(adm.delay_s)
        if adm.truncate:
            raise TransientSourceError(f"source {self.name}: truncated reply")
        arrays = self.exchange.klines(symbol, tf.name, start, end_incl, limit,
                                      corrupt=adm.corrupt)
        table = arrays.to_table(self.name, symbol, tf.name, self.clock.now_ms())
        return self.validated(table, symbol, tf.name, self.clock.now_ms())
