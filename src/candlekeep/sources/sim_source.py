"""A source over the simulated exchange, in-process: no sockets, same semantics.

It pages, validates and retries exactly as the CCXT source does and meets the same scripted
holes, late data and faults, so jobs (backfill, repair, gap detection) can be tested fast
and deterministically without an HTTP server. Pages are fetched one after another: the
in-process exchange has no latency to hide, and a fixed order keeps late-data bookkeeping
(which reply saw a late candle first) reproducible.
"""

from __future__ import annotations

import random

import pyarrow as pa

from candlekeep.config.source_types import SimSourceConfig
from candlekeep.core.clock import Clock
from candlekeep.core.errors import (
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe
from candlekeep.sim.exchange import (
    Admission,
    Api,
    SimExchange,
    fapi_klines_weight,
    spot_klines_weight,
)
from candlekeep.sim.orderbook import SimBook, depth_weight
from candlekeep.sources.base import MarketInfo, Source
from candlekeep.sources.capabilities import (
    Capabilities,
    binance_futures_weight,
    binance_spot_weight,
)
from candlekeep.sources.orderbook import F64
from candlekeep.sources.retry import RetryPolicy

PAGE_LIMIT = 1000


class SimSource(Source):
    """Candles from a SimExchange (one is made from ``seed`` when none is given).

    ``market_type`` "spot" serves ``BTC/USDT``-style symbols, "swap" the perpetuals
    (``BTC/USDT:USDT``) with futures weights.
    """

    source_type = "sim"

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
        if exchange is None:
            exchange = SimExchange(seed, clock=clock)
        if market_type not in ("spot", "swap"):
            raise SourceError(f"source {name}: sim market_type must be spot or swap, "
                              f"not {market_type!r}")
        self._api: Api = "spot" if market_type == "spot" else "fapi"
        weight = binance_spot_weight if self._api == "spot" else binance_futures_weight
        super().__init__(
            name, clock=clock or exchange.clock,
            caps=Capabilities(max_limit=PAGE_LIMIT, weight=weight, concurrent_pages=False),
            retry=RetryPolicy(max_attempts=max_attempts, max_delay_s=max_backoff_s),
            rng=random.Random(seed))
        self.exchange = exchange

    @classmethod
    def from_config(cls, name: str, cfg: SimSourceConfig, clock: Clock) -> SimSource:
        exchange = SimExchange(cfg.seed, cfg.symbols, clock=clock) if cfg.symbols else None
        return cls(name, seed=cfg.seed, exchange=exchange, clock=clock)

    def supported_timeframes(self) -> set[str]:
        return set(TIMEFRAMES)

    def page_limit(self, timeframe: str) -> int:
        return PAGE_LIMIT

    async def _load_markets(self) -> dict[str, MarketInfo]:
        now = self.clock.now_ms()
        return {
            m.symbol: MarketInfo(m.symbol, m.trading(now), m.listing_ms, tuple(TIMEFRAMES),
                                 m.market_id)
            for m in self.exchange.markets(self._api)
        }

    async def _request_candles(self, symbol: str, tf: Timeframe, start_ms: int,
                               end_ms: int | None, limit: int) -> pa.Table:
        """One simulated HTTP request, with the failures the server would produce."""
        weight = spot_klines_weight(limit) if self._api == "spot" else fapi_klines_weight(limit)
        adm = await self._admitted("klines", weight)
        end_incl = None if end_ms is None else end_ms - 1
        arrays = self.exchange.klines(symbol, tf.name, start_ms, end_incl, limit,
                                      corrupt=adm.corrupt)
        return arrays.to_table(self.name, symbol, tf.name, self.clock.now_ms())

    async def order_book(self, symbol: str, limit: int) -> tuple[F64, F64]:
        """The sim's book (mid at the last closed 1m candle's close), one request weighted
        as Binance weighs ``depth``."""
        await self.market(symbol)

        async def request() -> SimBook:
            await self._admitted("depth", depth_weight(self._api, str(limit)))
            return self.exchange.order_book(symbol, limit)

        book = await self.call(f"{self.name} {symbol} order book", request)
        return book.bids, book.asks

    async def _admitted(self, endpoint: str, weight: int) -> Admission:
        """The server's verdict on one request, its failures raised as the HTTP source
        would see them (a slow reply sleeps on the clock)."""
        adm = self.exchange.admit(self._api, endpoint, weight)
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
        return adm
