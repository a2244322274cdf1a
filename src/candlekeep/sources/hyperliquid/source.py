"""The native Hyperliquid source (``type: hyperliquid``): candles, markets, market data.

Candles come from ``candleSnapshot``, which serves only the newest 5,000 candles of a series
(``caps.history_limit``): a range reaching further back starts at that horizon (the base
clips it). Markets come from ``meta`` and ``spotMeta`` (see ``markets``); the precision of
each (size step, price decimals, tick) is kept in ``market_meta``. Beyond candles the source
reads what the accounts job stores: market contexts (``metaAndAssetCtxs``: mark, oracle,
funding, open interest) and funding-rate history (``fundingHistory``), as tables shaped like
``ASSET_CTX_SNAPSHOTS`` and ``FUNDING_RATES``, and order books (``l2Book``) for the
``orderbook`` job.

Every request is one ``POST /info`` through ``HyperliquidClient`` (weights, retries, 429s);
replies are checked item by item, and a malformed one is rejected whole (BadReplyError,
counted in ``stats.rejected_replies`` and logged), so nothing of it is stored.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa

from candlekeep.config.source_types import HYPERLIQUID_MAINNET, HYPERLIQUID_TIMEFRAMES
from candlekeep.core.clock import Clock
from candlekeep.core.errors import BadReplyError, SourceError
from candlekeep.core.schema import TS_TYPE, candles_from_columns, empty_candles
from candlekeep.core.text import redact_url
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.base import MarketInfo, Source
from candlekeep.sources.capabilities import HYPERLIQUID_NATIVE
from candlekeep.sources.hyperliquid.client import HyperliquidClient, HyperliquidLimiter, ItemCount
from candlekeep.sources.hyperliquid.markets import (
    HlMarket,
    MetaError,
    by_symbol,
    parse_meta,
    parse_spot_meta,
)
from candlekeep.sources.orderbook import F64, levels
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.retry import RetryPolicy

if TYPE_CHECKING:
    from candlekeep.config.source_types import HyperliquidSourceConfig

log = logging.getLogger("candlekeep.sources")

INTERVALS = HYPERLIQUID_TIMEFRAMES

FUNDING_PAGE = 500
"""fundingHistory returns at most 500 entries a reply (time-range requests, per the info
endpoint docs): a shorter page is the last."""
BOOK_LEVELS = 20
"""l2Book returns at most 20 levels a side and takes no depth parameter."""


class HyperliquidSource(Source):
    """Candles of Hyperliquid's perpetuals (``BTC/USDC:USDC``) and spot pairs
    (``PURR/USDC``) and its market-wide data, over ``POST {url}/info``."""

    source_type = "hyperliquid"

    def __init__(
        self,
        name: str,
        url: str = HYPERLIQUID_MAINNET,
        *,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        max_backoff_s: float = 30.0,
        weight_per_minute: int = 1200,
        adaptive_budget: bool = False,
        max_in_flight: int = 8,
        limiter: WeightLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        funding_page: int = FUNDING_PAGE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, caps=HYPERLIQUID_NATIVE, clock=clock, max_in_flight=max_in_flight,
                         retry=RetryPolicy(max_attempts=max_attempts, max_delay_s=max_backoff_s),
                         rng=rng)
        self.url = url.rstrip("/")
        self.limiter = limiter or HyperliquidLimiter(weight_per_minute, 60.0, clock=self.clock,
                                                     adaptive=adaptive_budget, name=name)
        self.client = HyperliquidClient(self, self.url, limiter=self.limiter,
                                        timeout_s=timeout_s, http=http)
        self.funding_page = funding_page
        self._hl: dict[str, HlMarket] = {}
        self._by_coin: dict[str, HlMarket] = {}

    @classmethod
    def from_config(cls, name: str, cfg: HyperliquidSourceConfig,
                    clock: Clock) -> HyperliquidSource:
        # The documented 1,200 a minute adapts to what the server enforces; a budget the
        # user set is fixed.
        return cls(name, cfg.url, clock=clock, timeout_s=cfg.timeout,
                   max_attempts=cfg.max_attempts, weight_per_minute=cfg.weight_per_minute,
                   adaptive_budget="weight_per_minute" not in cfg.model_fields_set)

    # ------------------------------------------------------------------ plumbing

    async def info(self, body: dict[str, Any], *, what: str,
                   items: ItemCount | None = None) -> Any:
        """One ``/info`` request (see ``HyperliquidClient.info``)."""
        return await self.client.info(body, what=what, items=items)

    def redact(self, text: str) -> str:
        """``text`` without the password of a proxy's ``base_url``, if it has one."""
        return text.replace(self.url, redact_url(self.url))

    async def close(self) -> None:
        await self.client.close()

    def page_limit(self, timeframe: str) -> int:
        """5,000: one request covers the whole horizon (weight 20 + 83, where two requests
        of the best ratio, 4,979 and 21, would weigh 102 + 20)."""
        return self.caps.max_limit

    def supported_timeframes(self) -> set[str]:
        return {tf for tf in TIMEFRAMES if tf in INTERVALS}

    def reject(self, what: str, reason: str) -> BadReplyError:
        """A malformed reply: counted, logged, raised by the caller; nothing is stored."""
        self.stats.rejected_replies += 1
        log.warning("reply rejected source=%s what=%s reason=%r", self.name, what, reason)
        return BadReplyError(self.name, what, reason)

    # ------------------------------------------------------------------ markets

    async def _load_markets(self) -> dict[str, MarketInfo]:
        meta = await self.info({"type": "meta"}, what="perpetuals")
        spot = await self.info({"type": "spotMeta"}, what="spot pairs")
        try:
            markets = by_symbol(parse_meta(meta) + parse_spot_meta(spot))
        except MetaError as exc:
            raise self.reject("meta", str(exc)) from None
        self._hl = markets
        self._by_coin = {m.coin: m for m in markets.values()}
        timeframes = tuple(tf for tf in TIMEFRAMES if tf in INTERVALS)
        return {m.symbol: MarketInfo(m.symbol, m.active, None, timeframes, m.coin)
                for m in markets.values()}

    async def market_meta(self, symbol: str) -> HlMarket:
        """``symbol``'s Hyperliquid market (coin, asset id, size step, price decimals, tick);
        SourceError naming close matches when there is none."""
        await self.market(symbol)
        return self._hl[symbol]

    async def market_by_coin(self, coin: str) -> HlMarket | None:
        """The market a reply's ``coin`` (``BTC``, ``PURR/USDC``, ``@1``) names, if listed."""
        await self.markets()
        return self._by_coin.get(coin)

    async def _perp_coin(self, coin_or_symbol: str) -> str:
        """A request's coin for a perp named by coin (``BTC``) or symbol (``BTC/USDC:USDC``);
        SourceError for a spot pair or a name nothing lists."""
        await self.markets()
        market = self._by_coin.get(coin_or_symbol) or self._hl.get(coin_or_symbol)
        if market is None:
            await self.market(coin_or_symbol)  # SourceError with close matches
            raise SourceError(f"source {self.name}: no market {coin_or_symbol!r}")
        if market.kind != "perp":
            raise SourceError(f"source {self.name}: {coin_or_symbol} is a spot pair; funding "
                              "exists for perpetuals only (e.g. BTC or BTC/USDC:USDC)")
        return market.coin

    # ------------------------------------------------------------------ candles

    async def _request_candles(self, symbol: str, tf: Timeframe, start_ms: int,
                               end_ms: int | None, limit: int) -> pa.Table:
        """One candleSnapshot: candles opening in ``[start_ms, end_ms)``, or the first
        ``limit`` from ``start_ms`` on. Hyperliquid's ``endTime`` is inclusive, and a
        request has no limit, only a time range: without ``end_ms`` (the listing probe) it
        asks up to now, which the horizon bounds to 5,000 candles, since the first candle
        after ``start_ms`` may be anywhere in that range."""
        coin = self._hl[symbol].coin
        req: dict[str, Any] = {"coin": coin, "interval": tf.name, "startTime": start_ms}
        if end_ms is not None:
            req["endTime"] = end_ms - 1
        # Already inside the base's ``call`` (retries, in-flight slot): one attempt here.
        rows = await self.client.post_once({"type": "candleSnapshot", "req": req},
                                           what=f"{symbol} {tf.name} from {fmt_ms(start_ms)}")
        table = self._candle_rows(rows, symbol, coin, tf.name)
        return table if table.num_rows <= limit else table.slice(0, limit)

    def _candle_rows(self, rows: Any, symbol: str, coin: str, interval: str) -> pa.Table:
        what = f"{symbol} {interval} candles"
        if not isinstance(rows, list):
            raise self.reject(what, f"expected a JSON array of candles, got "
                                    f"{type(rows).__name__}")
        if not rows:
            return empty_candles()
        try:
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError("a candle that is not an object")
            # A reply names its coin as asked (``@1``); the pair's name is accepted too, as
            # only perp replies are documented.
            names = {coin, symbol.split(":")[0]}
            bad = next((r for r in rows if r.get("s") not in names or r.get("i") != interval),
                       None)
            if bad is not None:
                raise ValueError(f"a candle of {bad.get('s')!r} {bad.get('i')!r}")
            ts = _ints([r["t"] for r in rows], "t")
            trades = _ints([r["n"] for r in rows], "n")
            cols = {k: _decimals([r[k] for r in rows], k) for k in ("o", "h", "l", "c", "v")}
        except KeyError as exc:
            raise self.reject(what, f"a candle without {exc}") from None
        except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self.reject(what, f"malformed candles: {exc}") from None
        # Hyperliquid gives base volume (v) and trades (n), not quote volume: null.
        return candles_from_columns(self.name, symbol, interval, ts, cols["o"], cols["h"],
                                    cols["l"], cols["c"], cols["v"],
                                    ingested_at_ms=self.clock.now_ms(), trades=trades)

    # ------------------------------------------------------------------ market data

    async def asset_contexts(self) -> pa.Table:
        """Every listed perpetual's context now (mark, oracle and mid price, funding, open
        interest, premium, day volume, previous day price), one ``metaAndAssetCtxs``
        request, shaped like ``ASSET_CTX_SNAPSHOTS`` with ``snapshot_ts`` = the clock's
        now. Delisted perpetuals are left out (their contexts are frozen)."""
        from candlekeep.accounts.datasets import ASSET_CTX_SNAPSHOTS

        reply = await self.info({"type": "metaAndAssetCtxs"}, what="market contexts")
        what = "metaAndAssetCtxs"
        if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list)):
            raise self.reject(what, "expected [meta, [contexts...]]")
        try:
            perps = parse_meta(reply[0])
        except MetaError as exc:
            raise self.reject(what, str(exc)) from None
        ctxs = reply[1]
        if len(ctxs) != len(perps):
            raise self.reject(what, f"{len(perps)} perpetuals but {len(ctxs)} contexts")
        now = self.clock.now_ms()
        cols: dict[str, list[Any]] = {n: [] for n in ASSET_CTX_SNAPSHOTS.schema.names}
        fields = (("mark_px", "markPx", True), ("oracle_px", "oraclePx", True),
                  ("mid_px", "midPx", False), ("funding", "funding", True),
                  ("open_interest", "openInterest", True), ("premium", "premium", False),
                  ("day_ntl_vlm", "dayNtlVlm", True), ("prev_day_px", "prevDayPx", True))
        for perp, ctx in zip(perps, ctxs, strict=True):
            if not perp.active:
                continue
            if not isinstance(ctx, dict):
                raise self.reject(what, f"{perp.coin}: a context that is not an object")
            for column, key, required in fields:
                try:
                    cols[column].append(_decimal(ctx.get(key), required))
                except ValueError as exc:
                    raise self.reject(what, f"{perp.coin} {key}: {exc}") from None
            cols["source"].append(self.name)
            cols["coin"].append(perp.coin)
            cols["snapshot_ts"].append(now)
            cols["ingested_at"].append(now)
        return _table(cols, ASSET_CTX_SNAPSHOTS.schema)

    async def order_book(self, symbol: str, limit: int) -> tuple[F64, F64]:
        """``symbol``'s book (``BTC/USDC:USDC`` or ``PURR/USDC``): one ``l2Book`` request
        for its coin at full precision (weight 2). Hyperliquid serves at most 20 levels a
        side and takes no depth, so ``limit`` only trims: any limit above 20 gets 20, and
        the ±2 % depth counts those 20 levels. A reply that is not the documented
        ``{"coin", "time", "levels": [bids, asks]}`` of ``{"px", "sz", "n"}`` levels, or
        names another coin, is rejected (BadReplyError); so is ``null``, Hyperliquid's
        answer for a coin it does not list, as the markets just said it does."""
        coin = (await self.market_meta(symbol)).coin
        reply = await self.info({"type": "l2Book", "coin": coin}, what=f"{symbol} order book")
        what = f"{symbol} l2Book"
        if reply is None:
            raise self.reject(what, f"null: no book for coin {coin!r}")
        try:
            if not isinstance(reply, dict) or reply.get("coin") != coin:
                raise ValueError(f"expected the book of {coin!r}, got "
                                 f"{_named(reply)}")
            sides = reply.get("levels")
            if not (isinstance(sides, list) and len(sides) == 2):
                raise ValueError("levels is not [bids, asks]")
            bids, asks = (levels([_px_sz(lv) for lv in side[:min(limit, BOOK_LEVELS)]])
                          for side in sides)
        except (TypeError, ValueError) as exc:
            raise self.reject(what, f"malformed book: {exc}") from None
        return bids, asks

    async def funding_history(self, coin: str, start_ms: int, end_ms: int) -> pa.Table:
        """A perpetual's funding rates settled in ``[start_ms, end_ms)``, oldest first,
        shaped like ``FUNDING_RATES``: ``fundingHistory`` paged forward from ``startTime``
        (500 a reply) until a short page. ``coin`` is ``BTC`` or ``BTC/USDC:USDC``."""
        from candlekeep.accounts.datasets import FUNDING_RATES

        coin = await self._perp_coin(coin)
        times: list[int] = []
        rates: list[float | None] = []
        premiums: list[float | None] = []
        cursor = start_ms
        while cursor < end_ms:
            page = await self.info(
                {"type": "fundingHistory", "coin": coin, "startTime": cursor,
                 "endTime": end_ms - 1}, what=f"{coin} funding from {fmt_ms(cursor)}")
            rows = self._funding_rows(page, coin, cursor, end_ms)
            for t, rate, premium in rows:
                if times and t <= times[-1]:
                    continue  # a page edge seen twice
                times.append(t)
                rates.append(rate)
                premiums.append(premium)
            if len(page) < self.funding_page or not rows:
                break
            cursor = rows[-1][0] + 1  # one settlement per coin and time
        now = self.clock.now_ms()
        n = len(times)
        return _table({"source": [self.name] * n, "coin": [coin] * n, "time": times,
                       "funding_rate": rates, "premium": premiums,
                       "ingested_at": [now] * n}, FUNDING_RATES.schema)

    def _funding_rows(self, page: Any, coin: str, start_ms: int,
                      end_ms: int) -> list[tuple[int, float | None, float | None]]:
        what = f"{coin} fundingHistory"
        if not isinstance(page, list):
            raise self.reject(what, f"expected a JSON array, got {type(page).__name__}")
        out: list[tuple[int, float | None, float | None]] = []
        for i, row in enumerate(page):
            try:
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                if row.get("coin") != coin:
                    raise ValueError(f"coin {row.get('coin')!r}")
                t = row.get("time")
                if not isinstance(t, int) or isinstance(t, bool):
                    raise ValueError(f"time {t!r}")
                if not start_ms <= t < end_ms:
                    raise ValueError(f"time {fmt_ms(t)} outside the range asked for")
                if out and t < out[-1][0]:
                    raise ValueError("times not in order")
                out.append((t, _decimal(row.get("fundingRate"), True),
                            _decimal(row.get("premium"), False)))
            except ValueError as exc:
                raise self.reject(what, f"entry {i}: {exc}") from None
        return out


def _px_sz(level: Any) -> tuple[str, str]:
    """One l2Book level's price and size, decimal strings as Hyperliquid sends them."""
    if not isinstance(level, dict):
        raise ValueError("a level that is not an object")
    px, sz = level.get("px"), level.get("sz")
    if not (isinstance(px, str) and isinstance(sz, str)):
        raise ValueError(f"a level with px {px!r} and sz {sz!r}, not decimal strings")
    return px, sz


def _named(reply: Any) -> str:
    return repr(reply.get("coin")) if isinstance(reply, dict) else type(reply).__name__


def _ints(values: Sequence[Any], name: str) -> pa.Array:
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise ValueError(f"{name} that is not an integer")
    return pa.array(values, pa.int64())


def _decimals(values: Sequence[Any], name: str) -> pa.Array:
    """Decimal strings (as Hyperliquid sends prices and sizes) or numbers as float64."""
    if any(v is None or isinstance(v, bool) for v in values):
        raise ValueError(f"{name} missing or not a number")
    arr = pa.array(values)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.float64())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return arr.cast(pa.float64())
    raise ValueError(f"{name} of type {arr.type}")


def _decimal(value: Any, required: bool) -> float | None:
    """One decimal string or number; None allowed where ``required`` is False."""
    if value is None:
        if required:
            raise ValueError("missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def _table(cols: dict[str, list[Any]], schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        values = cols[field.name]
        if field.type == TS_TYPE:
            arrays.append(pa.array(values, pa.int64()).cast(TS_TYPE))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["FUNDING_PAGE", "INTERVALS", "HyperliquidSource"]
