"""Market data through CCXT (async), paced by our own weight limiter.

CCXT's throttle counts requests per instance with a token bucket that knows neither the
exchange's per-endpoint weights as they are today nor what the server reports as used, so
it is switched off: every HTTP request CCXT makes passes our ``fetch2`` hook, which charges
its weight to a WeightLimiter, and every response passes our ``handle_errors`` hook, which
reads the weight header, turns 429/418, 5xx and unparseable bodies into candlekeep errors
before CCXT can mistake them for something else (a truncated JSON body otherwise comes back
from CCXT as a non-JSON value instead of an error).

What each exchange allows (candles per request, weight per request, budget per window) is
data in ``CAPABILITIES``; an exchange missing there falls back to what CCXT declares
(``features[...]['fetchOHLCV']['limit']`` and ``rateLimit``). A configured ``rate_limit``
is a fixed budget; without one, that advertised budget is where an adaptive budget starts
(cut on a 429, raised back slowly: see ``adaptive_budget``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.clock import Clock
from candlekeep.core.errors import (
    BadReplyError,
    BannedError,
    GeoBlockedError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.schema import candles_from_columns, empty_candles
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe
from candlekeep.sources.base import MarketInfo, Source
from candlekeep.sources.binance_volumes import binance_volumes
from candlekeep.sources.capabilities import Capabilities, capabilities, known
from candlekeep.sources.orderbook import F64, in_base_units, levels
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.retry import RetryPolicy
from candlekeep.sources.usage_headers import parse_usage

if TYPE_CHECKING:
    from pydantic import SecretStr

    from candlekeep.config.source_types import CcxtSourceConfig

log = logging.getLogger("candlekeep.sources")

_MARKET_TYPE_ALIASES = {"spot": "spot", "swap": "swap", "perp": "swap", "linear": "swap",
                        "future": "future", "futures": "future"}


def _generic_capabilities(exchange: Any, market_type: str) -> Capabilities:
    features = getattr(exchange, "features", None) or {}
    node: Any = features.get(market_type) or {}
    if isinstance(node, dict) and "fetchOHLCV" not in node:
        node = node.get("linear") or node.get("inverse") or {}
    limit = 100
    if isinstance(node, dict):
        limit = int((node.get("fetchOHLCV") or {}).get("limit") or 100)
    rate_ms = float(getattr(exchange, "rateLimit", 1000) or 1000)
    return Capabilities(max_limit=limit, budget=max(1, int(1000 // rate_ms)), window_s=1.0)


def rebase_urls(urls: Any, base_url: str) -> Any:
    """``urls`` with the scheme and host of every URL replaced by ``base_url``'s.

    Paths are kept (and prefixed by ``base_url``'s own path, for proxies), so the sim
    server or a replay proxy sees the same paths the real exchange would.
    """
    base = urlsplit(base_url)
    prefix = base.path.rstrip("/")
    if isinstance(urls, dict):
        return {k: rebase_urls(v, base_url) for k, v in urls.items()}
    if isinstance(urls, list):
        return [rebase_urls(v, base_url) for v in urls]
    if isinstance(urls, str) and "://" in urls:
        parts = urlsplit(urls)
        return urlunsplit((base.scheme, base.netloc, prefix + parts.path, parts.query,
                           parts.fragment))
    return urls


class _Scrubber:
    """Removes credentials from any text that could reach a message or a log line."""

    def __init__(self, secrets: tuple[str | None, ...]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len,
                               reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _ScrubFilter(logging.Filter):
    """CCXT logs request headers (API key included) at debug level: scrub them."""

    def __init__(self) -> None:
        super().__init__()
        self.scrubbers: list[_Scrubber] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.scrubbers:
            text = record.getMessage()
            for scrub in self.scrubbers:
                text = scrub(text)
            record.msg, record.args = text, None
        return True


def _scrubbing_logger(name: str, scrub: _Scrubber) -> logging.Logger:
    """The logger handed to CCXT, scrubbing the credentials of every source using it."""
    logger = logging.getLogger(f"candlekeep.sources.ccxt.{name}")
    filt = next((f for f in logger.filters if isinstance(f, _ScrubFilter)), None)
    if filt is None:
        filt = _ScrubFilter()
        logger.addFilter(filt)
    filt.scrubbers.append(scrub)
    return logger


_HOOKED: dict[type, type] = {}


def _hooked_class(base: type) -> type:
    """A subclass of the CCXT exchange class whose every request and response pass our hooks."""
    cls = _HOOKED.get(base)
    if cls is not None:
        return cls

    class Hooked(base):  # type: ignore[valid-type, misc]
        ck_source: CcxtSource | None = None

        async def fetch2(self, path: str, api: Any = "public", method: str = "GET",
                         params: Any = None, config: Any = None) -> Any:
            params = {} if params is None else params
            config = {} if config is None else config
            source = self.ck_source
            if source is None:
                return await super().fetch2(path, api, method, params, config)
            async with source._request_slot(path, params):
                return await super().fetch2(path, api, method, params, config)

        def handle_errors(self, code: int, reason: str, url: str, method: str,
                          headers: Any, body: str, response: Any, request_headers: Any,
                          request_body: Any) -> Any:
            source = self.ck_source
            if source is not None:
                source._on_response(code, reason, headers, body, response)
            result = super().handle_errors(code, reason, url, method, headers, body, response,
                                           request_headers, request_body)
            if source is not None:
                source._on_unmapped_error(code, reason, body)
            return result

    Hooked.__name__ = Hooked.__qualname__ = base.__name__
    _HOOKED[base] = Hooked
    return Hooked


class CcxtSource(Source):
    """Candles from any CCXT exchange; Binance spot and USDⓈ-M futures are tuned by data."""

    source_type = "ccxt"

    def __init__(
        self,
        name: str,
        exchange: str,
        *,
        market_type: str = "spot",
        base_url: str | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        password: str | None = None,
        max_requests_per_second: float | None = None,
        rate_limit: tuple[int, float] | None = None,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        max_backoff_s: float = 30.0,
        max_in_flight: int = 16,
        limiter: WeightLimiter | None = None,
    ) -> None:
        import ccxt.async_support as ccxt_async

        try:
            kind = _MARKET_TYPE_ALIASES[market_type]
        except KeyError:
            raise SourceError(
                f"source {name}: unknown market_type {market_type!r}; use spot, swap or future"
            ) from None
        base_cls = getattr(ccxt_async, exchange, None)
        if not isinstance(base_cls, type):
            raise SourceError(f"source {name}: ccxt has no exchange {exchange!r}")
        super().__init__(name, clock=clock, max_in_flight=max_in_flight,
                         retry=RetryPolicy(max_attempts=max_attempts, max_delay_s=max_backoff_s))
        self.exchange_id = exchange
        self.market_type = kind
        self._scrub = _Scrubber((api_key, secret, password))
        ccxt_logger = _scrubbing_logger(name, self._scrub)
        config: dict[str, Any] = {
            "enableRateLimit": False,
            "timeout": int(timeout_s * 1000),
            "logger": ccxt_logger,
            "options": {"defaultType": kind, "adjustForTimeDifference": False},
        }
        for key, value in (("apiKey", api_key), ("secret", secret), ("password", password)):
            if value:
                config[key] = value
        caps = capabilities(exchange, kind) if known(exchange, kind) else None
        if caps is not None and caps.markets_types is not None:
            # Only this market type's exchangeInfo; no margin or currency calls either.
            config["options"].update({"fetchMarkets": {"types": list(caps.markets_types)},
                                      "fetchMargins": False, "fetchCurrencies": False})
        self._ex: Any = _hooked_class(base_cls)(config)
        self._ex.ck_source = self
        if base_url:
            self._ex.urls["api"] = rebase_urls(self._ex.urls["api"], base_url)
        self.caps = caps or capabilities(exchange, kind, _generic_capabilities(self._ex, kind))
        budget, window = rate_limit or (self.caps.budget, self.caps.window_s)
        self.limiter = limiter or WeightLimiter(budget, window, clock=self.clock,
                                                max_rps=max_requests_per_second,
                                                adaptive=rate_limit is None, name=name)

    @classmethod
    def from_config(cls, name: str, cfg: CcxtSourceConfig, clock: Clock) -> CcxtSource:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value else None

        return cls(
            name, cfg.exchange, market_type=cfg.market_type, base_url=cfg.base_url,
            api_key=secret(cfg.api_key), secret=secret(cfg.secret),
            password=secret(cfg.password),
            max_requests_per_second=cfg.max_requests_per_second,
            rate_limit=(cfg.rate_limit.weight, cfg.rate_limit.window) if cfg.rate_limit
            else None,
            clock=clock, timeout_s=cfg.timeout, max_attempts=cfg.max_attempts)

    # ------------------------------------------------------------------ hooks

    @asynccontextmanager
    async def _request_slot(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[None]:
        """Weight is booked before the request and held until a window after its reply."""
        weight = self.caps.weight(path, params)
        async with self.limiter.reserve(weight):
            self.count_request(weight)
            yield

    def _on_response(self, code: int, reason: str, headers: Any, body: str | None,
                     response: Any) -> None:
        usage = parse_usage(headers, self.clock.now_ms() / 1000)
        used = usage.used_in(self.limiter.window_s)
        if used is not None:
            self.limiter.observe_used(used, accepted=code not in (418, 429))
        retry_after = usage.retry_after_s
        if code == 418:
            self.stats.rate_limited += 1
            self.limiter.on_banned(retry_after)
            raise BannedError(f"source {self.name}: HTTP 418 banned (retry after "
                              f"{retry_after}s): nothing is sent until then", retry_after)
        if code == 429:
            self.stats.rate_limited += 1
            self.limiter.on_rate_limited(retry_after)
            raise RateLimitedError(
                f"source {self.name}: HTTP 429 rate limited (retry after {retry_after}s)",
                retry_after)
        if code >= 500:
            raise TransientSourceError(
                f"source {self.name}: HTTP {code} {reason}: {self._scrub(_snippet(body))}")
        if code < 300 and response is None and body:
            raise TransientSourceError(
                f"source {self.name}: unparseable or truncated reply "
                f"({len(body)} bytes): {self._scrub(_snippet(body))}")

    def _on_unmapped_error(self, code: int, reason: str, body: str | None) -> None:
        """A 4xx CCXT did not map: CCXT would call some of them (400, 403, 404) "exchange
        not available", i.e. retryable, but a request the exchange refuses stays refused."""
        if code == 451:
            raise GeoBlockedError(
                f"source {self.name}: HTTP 451 (geo-blocked): {self._scrub(_snippet(body))}")
        if 400 <= code < 500 and code != 408:
            raise SourceError(
                f"source {self.name}: HTTP {code} {reason}: {self._scrub(_snippet(body))}")

    # ------------------------------------------------------------------ plumbing

    def redact(self, text: str) -> str:
        return self._scrub(text)

    def _translate(self, exc: BaseException) -> SourceError:
        """Any failure as a candlekeep error with credentials scrubbed from its message."""
        import ccxt

        if isinstance(exc, SourceError):
            return exc
        text = self._scrub(f"source {self.name}: {type(exc).__name__}: {exc}")
        if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
            return RateLimitedError(text)
        if isinstance(exc, ccxt.NetworkError | ccxt.BadResponse | asyncio.TimeoutError
                      | ConnectionError):
            return TransientSourceError(text)
        return SourceError(text)

    # ------------------------------------------------------------------ Source API

    def supported_timeframes(self) -> set[str]:
        return {tf for tf in TIMEFRAMES if tf in (self._ex.timeframes or {})}

    async def _load_markets(self) -> dict[str, MarketInfo]:
        await self.call(f"{self.name} load_markets", self._ex.load_markets)
        timeframes = tuple(tf for tf in TIMEFRAMES if tf in (self._ex.timeframes or {}))
        result: dict[str, MarketInfo] = {}
        for symbol, m in (self._ex.markets or {}).items():
            if m.get("type") != self.market_type:
                continue
            active = m.get("active")
            created = m.get("created")
            result[symbol] = MarketInfo(symbol, active is not False,
                                        int(created) if created is not None else None,
                                        timeframes, m.get("id"),
                                        self.contract_size(m) if m.get("inverse") else None)
        return result

    def _unlisted_market(self, symbol: str) -> MarketInfo | None:
        """A loaded market of another type (a ``future`` source asked for a perpetual):
        accepted, as CCXT's ``market()`` accepts any loaded market."""
        m = (self._ex.markets or {}).get(symbol)
        if m is None:
            return None
        created = m.get("created")
        return MarketInfo(symbol, m.get("active") is not False,
                          int(created) if created is not None else None,
                          tuple(self.supported_timeframes()), m.get("id"),
                          self.contract_size(m) if m.get("inverse") else None)

    async def close(self) -> None:
        await self._ex.close()

    async def _request_candles(self, symbol: str, tf: Timeframe, start_ms: int,
                               end_ms: int | None, limit: int) -> pa.Table:
        """One request: Binance-style raw klines where the exchange has them, else CCXT's
        ``fetch_ohlcv``."""
        caps = self.caps
        market = cast(dict[str, Any], self._ex.market(symbol))
        if caps.klines_method is not None:
            request: dict[str, Any] = {
                "symbol": market["id"],
                "interval": self._ex.timeframes[tf.name],
                "startTime": start_ms,
                "limit": limit,
            }
            if end_ms is not None and caps.end_param:
                request[caps.end_param] = end_ms - 1
            raw = await getattr(self._ex, caps.klines_method)(request)
            return self._binance_rows(raw, symbol, tf.name, market)
        params: dict[str, Any] = {}
        if end_ms is not None and caps.end_param:
            params[caps.end_param] = end_ms - 1
        raw = await self._ex.fetch_ohlcv(symbol, tf.name, since=start_ms, limit=limit,
                                         params=params)
        return self._ohlcv_rows(raw, symbol, tf.name)

    async def order_book(self, symbol: str, limit: int) -> tuple[F64, F64]:
        """CCXT's ``fetch_order_book``: one request, weighted by ``limit`` (Binance's
        depth weights in ``capabilities``). Quantities come back in base currency: CCXT
        gives derivatives' in contracts, scaled here by the market's ``contractSize``
        (``in_base_units``), so depth is the quote value on every market type."""
        await self.market(symbol)
        market = cast(dict[str, Any], self._ex.market(symbol))
        size = market.get("contractSize") if market.get("contract") else None
        if market.get("contract") and size is None:
            raise self._reject(symbol, "book", "contract market without a contractSize")
        raw = await self.call(f"{self.name} {symbol} order book",
                              lambda: self._ex.fetch_order_book(symbol, limit))
        try:
            bids, asks = levels(raw["bids"]), levels(raw["asks"])
        except (TypeError, ValueError, KeyError) as exc:
            raise self._reject(symbol, "book", f"malformed order book: {exc}") from None
        inverse = bool(market.get("inverse"))
        scale = None if size is None else float(size)
        return in_base_units(bids, scale, inverse), in_base_units(asks, scale, inverse)

    def _reject(self, symbol: str, timeframe: str, reason: str) -> BadReplyError:
        self.stats.rejected_replies += 1
        log.warning("reply rejected source=%s symbol=%s timeframe=%s reason=%r",
                    self.name, symbol, timeframe, reason)
        return BadReplyError(self.name, symbol, f"{timeframe}: {reason}")

    def _binance_rows(self, raw: Any, symbol: str, timeframe: str,
                      market: dict[str, Any]) -> pa.Table:
        """Binance-style kline rows to a candle table, column by column."""
        if not isinstance(raw, list):
            raise self._reject(symbol, timeframe,
                               f"expected a JSON array of klines, got {type(raw).__name__}")
        if not raw:
            return empty_candles()
        try:
            cols = list(zip(*raw, strict=False))  # as many columns as the shortest row
            if len(cols) < 9:
                raise ValueError("kline row with fewer than 9 fields")
            volume, quote_volume = binance_volumes(
                _floats(cols[5]), _floats(cols[7]), self.contract_size(market))
            return candles_from_columns(
                self.name, symbol, timeframe,
                pa.array(cols[0], pa.int64()),
                _floats(cols[1]), _floats(cols[2]), _floats(cols[3]), _floats(cols[4]),
                volume,
                ingested_at_ms=self.clock.now_ms(),
                quote_volume=quote_volume,
                trades=pa.array(cols[8]).cast(pa.int64()),
            )
        except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self._reject(symbol, timeframe, f"malformed klines: {exc}") from None

    def contract_size(self, market: Mapping[str, Any]) -> float | None:
        """The contract size of an inverse market (volumes count contracts), else None."""
        if not (self.caps.inverse or market.get("inverse")):
            return None
        size = market.get("contractSize")
        if size is None:
            raise SourceError(f"source {self.name}: inverse market {market.get('symbol')} "
                              "has no contract size")
        return float(size)

    def _ohlcv_rows(self, raw: Any, symbol: str, timeframe: str) -> pa.Table:
        """CCXT's unified [ts, o, h, l, c, v] rows (no quote volume or trades there)."""
        if not isinstance(raw, list):
            raise self._reject(symbol, timeframe,
                               f"expected a list of candles, got {type(raw).__name__}")
        if not raw:
            return empty_candles()
        try:
            cols = list(zip(*raw, strict=False))
            if len(cols) < 6:
                raise ValueError("candle row with fewer than 6 fields")
            return candles_from_columns(
                self.name, symbol, timeframe, pa.array(cols[0], pa.int64()),
                _floats(cols[1]), _floats(cols[2]), _floats(cols[3]), _floats(cols[4]),
                _floats(cols[5]), ingested_at_ms=self.clock.now_ms())
        except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self._reject(symbol, timeframe, f"malformed candles: {exc}") from None


def _floats(values: tuple[Any, ...]) -> pa.Array:
    """Decimal strings or numbers to float64 (Binance sends prices as strings)."""
    arr = pa.array(values)
    if pa.types.is_null(arr.type):
        return arr.cast(pa.float64())
    return pc.cast(arr, pa.float64())


def _snippet(body: str | None, size: int = 200) -> str:
    if not body:
        return ""
    return body if len(body) <= size else body[:size] + "…"


__all__ = ["CcxtSource", "rebase_urls"]
