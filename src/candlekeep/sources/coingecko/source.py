"""The CoinGecko source (``type: coingecko``): coin list, price points and OHLC.

CoinGecko aggregates prices over exchanges; it has no exchange candles (no bar volume,
widths it picks itself), so ``fetch_candles`` refuses with the job type to use instead,
``coingecko_prices``, which writes the ``coingecko_prices`` and ``coingecko_ohlc``
datasets (``sources.coingecko.datasets``). Markets are the coin list: one entry per coin
id and per symbol that only one coin has, each naming its id in ``market_id``.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import httpx

from candlekeep.core.clock import Clock
from candlekeep.core.errors import BadReplyError, SourceError
from candlekeep.core.timeframes import Timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.base import MarketInfo, Source
from candlekeep.sources.coingecko.client import PER_MINUTE, ROOTS, CoinGeckoClient
from candlekeep.sources.coingecko.coins import Coin, CoinIndex, CoinResolveError
from candlekeep.sources.coingecko.granularity import ChartRange, Plan
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.retry import RetryPolicy

if TYPE_CHECKING:
    import pyarrow as pa

    from candlekeep.config.source_types import CoinGeckoSourceConfig

log = logging.getLogger("candlekeep.sources")

JOB_TYPE = "coingecko_prices"


class CoinGeckoSource(Source):
    """CoinGecko's REST API on the demo or the pro host."""

    source_type = "coingecko"

    def __init__(self, name: str, *, plan: Plan = "demo", api_key: str | None = None,
                 base_url: str | None = None, clock: Clock | None = None,
                 timeout_s: float = 10.0, max_attempts: int = 5,
                 calls_per_minute: int | None = None, max_in_flight: int = 4,
                 http: httpx.AsyncClient | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__(name, clock=clock, max_in_flight=max_in_flight,
                         retry=RetryPolicy(max_attempts=max_attempts), rng=rng)
        self.plan: Plan = plan
        self.keyless = not api_key
        budget = calls_per_minute or PER_MINUTE["keyless" if self.keyless else plan]
        # The plan's published budget is where an adaptive one starts (a key shared with
        # another program, or a stricter endpoint, gets less); a configured one is fixed.
        self.limiter = WeightLimiter(budget, 60.0, clock=self.clock,
                                     adaptive=calls_per_minute is None, name=name)
        self.client = CoinGeckoClient(self, base_url or ROOTS[plan], plan, api_key,
                                      limiter=self.limiter, timeout_s=timeout_s, http=http)
        self._index: CoinIndex | None = None

    @classmethod
    def from_config(cls, name: str, cfg: CoinGeckoSourceConfig, clock: Clock) -> CoinGeckoSource:
        key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        return cls(name, plan=cfg.plan, api_key=key, base_url=cfg.base_url, clock=clock,
                   timeout_s=cfg.timeout, max_attempts=cfg.max_attempts,
                   calls_per_minute=cfg.calls_per_minute)

    def redact(self, text: str) -> str:
        return self.client.redact(text)

    async def close(self) -> None:
        await self.client.close()

    def reject(self, what: str, reason: str) -> BadReplyError:
        """A malformed reply: counted, logged, raised by the caller; nothing is stored."""
        self.stats.rejected_replies += 1
        log.warning("reply rejected source=%s what=%s reason=%r", self.name, what, reason)
        return BadReplyError(self.name, what, reason)

    # ------------------------------------------------------------------ coins

    async def _load_markets(self) -> dict[str, MarketInfo]:
        reply = await self.client.get("/coins/list", {}, what="coin list")
        try:
            index = CoinIndex.parse(reply)
        except ValueError as exc:
            raise self.reject("coins/list", str(exc)) from None
        self._index = index
        markets = {c.id: MarketInfo(c.id, market_id=c.id) for c in index.by_id.values()}
        for symbol, coin in index.unambiguous_symbols().items():
            markets.setdefault(symbol, MarketInfo(symbol, market_id=coin.id))
        return markets

    async def coin(self, wanted: str) -> Coin:
        """The coin a configured name means (an id, or a symbol only one coin has), from
        the cached coin list; SourceError listing the candidates of an ambiguous symbol
        or the close matches of an unknown one."""
        await self.markets()  # a refused key or an outage fails here, as itself
        try:
            info: MarketInfo | None = await self.market(wanted)  # reloads a stale list
        except SourceError:
            info = None
        index = self._index
        assert index is not None  # set by every load of the markets
        if info is not None and info.market_id in index.by_id:
            return index.by_id[info.market_id]
        try:
            return index.resolve(wanted)
        except CoinResolveError as exc:
            raise SourceError(f"source {self.name}: {exc}") from None

    # ------------------------------------------------------------------ data

    async def market_chart(self, coin_id: str, r: ChartRange) -> Any:
        """``market_chart/range`` in USD for ``r`` (parsed, unchecked); its ``from`` is
        taken when the request is sent (a 5-minutely range's moves with the clock)."""
        def params() -> dict[str, Any]:
            from_ms = r.from_at(self.clock.now_ms())
            return {"vs_currency": "usd", "from": from_ms // 1000, "to": -(-r.to_ms // 1000)}

        return await self.client.get(
            f"/coins/{coin_id}/market_chart/range", params,
            what=f"{coin_id} market_chart from {fmt_ms(r.from_ms)} to {fmt_ms(r.to_ms)}")

    async def ohlc(self, coin_id: str, days: int, interval: str | None = None) -> Any:
        """``/ohlc`` in USD for the last ``days`` (parsed, unchecked)."""
        params: dict[str, Any] = {"vs_currency": "usd", "days": days}
        if interval is not None:
            params["interval"] = interval
        return await self.client.get(
            f"/coins/{coin_id}/ohlc", params,
            what=f"{coin_id} ohlc days={days}" + (f" interval={interval}" if interval else ""))

    async def _request_candles(self, symbol: str, tf: Timeframe, start_ms: int,
                               end_ms: int | None, limit: int) -> pa.Table:
        raise SourceError(f"source {self.name}: CoinGecko has no exchange candles (its "
                          f"points are aggregated prices it spaces itself); use the "
                          f"{JOB_TYPE} job type, which writes the coingecko_prices and "
                          "coingecko_ohlc datasets")


__all__ = ["CoinGeckoSource"]
