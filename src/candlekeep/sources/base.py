"""The contract every market-data source fulfils, and the machinery they share.

A source implements two requests: listing its markets and fetching one page of candles.
Everything around them lives here once: paging a range into requests (concurrently, or in
order where replies depend on order), the exchange's history horizon, retries with backoff
on the injected clock, a bound on requests in flight, reply validation, the statistics a
job reads, and the timeframe and symbol checks that turn a typo into a clear error.
"""

from __future__ import annotations

import abc
import asyncio
import difflib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TypeVar

from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.errors import BadReplyError, SourceError, TransientSourceError
from candlekeep.core.tasks import gather_all
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.sources.capabilities import Capabilities
from candlekeep.sources.circuit import (
    CircuitBreaker,
    CircuitConfig,
    CircuitState,
    circuit_config,
)
from candlekeep.sources.metering import current_meter
from candlekeep.sources.retry import RetryPolicy, call_with_retry

if TYPE_CHECKING:
    import pyarrow as pa

    from candlekeep.sources.orderbook import F64

T = TypeVar("T")

MARKETS_TTL_MS = 10 * 60_000
"""A symbol missing from a market list older than this reloads the list once."""


@dataclass(frozen=True, slots=True)
class MarketInfo:
    symbol: str
    active: bool = True
    listing_ms: int | None = None
    timeframes: tuple[str, ...] = ()
    market_id: str | None = None
    """The exchange's own id (``BTCUSDT`` for ``BTC/USDT``): what its files and URLs use."""
    contract_size: float | None = None
    """Set for inverse contracts only, whose volumes count contracts of this quote value."""


@dataclass
class SourceStats:
    """Counters a job reads before and after its work to report what it cost."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    rejected_replies: int = 0
    weight_used: int = 0
    errors: list[str] = field(default_factory=list)


class Source(abc.ABC):
    """An async market-data source.

    ``fetch_candles`` returns only closed, validated candles in ``[start_ms, end_ms)``; it
    pages with ``page_limit`` candles per request. Subclasses implement ``_load_markets``
    and ``_request_candles`` (one request each) and may translate their library's errors in
    ``_translate``.
    """

    source_type: ClassVar[str] = ""
    """The ``type:`` that configures this class (picks its circuit breaker defaults)."""

    def __init__(self, name: str, *, caps: Capabilities | None = None,
                 clock: Clock | None = None, retry: RetryPolicy | None = None,
                 max_in_flight: int = 16, rng: random.Random | None = None,
                 circuit: CircuitConfig | None = None) -> None:
        self.name = name
        self.stats = SourceStats()
        self.caps = caps or Capabilities()
        self.clock: Clock = clock or SystemClock()
        self.retry_policy = retry or RetryPolicy()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._rng = rng or random.Random()
        self._markets: dict[str, MarketInfo] | None = None
        self._markets_at = 0
        self._markets_lock = asyncio.Lock()
        self.circuit = CircuitBreaker(name, circuit or circuit_config(self.source_type),
                                      clock=self.clock)
        """Fails requests fast while the provider is down (see ``sources.circuit``)."""
        self.degraded = False
        """Set by the ``providers_health`` job while the provider is judged degraded."""

    # ------------------------------------------------------------ what a source implements

    @abc.abstractmethod
    async def _load_markets(self) -> dict[str, MarketInfo]:
        """Every market of the configured type, delisted ones included (``active=False``).
        Requests go through ``call``."""

    @abc.abstractmethod
    async def _request_candles(self, symbol: str, tf: Timeframe, start_ms: int,
                               end_ms: int | None, limit: int) -> pa.Table:
        """One request: candles opening at or after ``start_ms`` (and before ``end_ms``
        when given), at most ``limit``, as a candle table. Validation, retries and paging
        are the caller's (this class's) business."""

    def _translate(self, exc: BaseException) -> SourceError:
        """Any failure of a request as a candlekeep error; override to map a library's."""
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, asyncio.TimeoutError | ConnectionError):
            return TransientSourceError(f"source {self.name}: {type(exc).__name__}: {exc}")
        return SourceError(f"source {self.name}: {type(exc).__name__}: {exc}")

    async def order_book(self, symbol: str, limit: int) -> tuple[F64, F64]:
        """One snapshot of ``symbol``'s book, at most ``limit`` levels a side: bids and
        asks as (n, 2) ``[price, qty]`` arrays (see ``sources.orderbook.levels``). Sources
        with books override it; the rest say they have none."""
        raise SourceError(f"source {self.name}: serves no order books (type "
                          f"{self.source_type or type(self).__name__})")

    def supported_timeframes(self) -> set[str] | None:
        """Timeframes this source serves, or None when any timeframe is."""
        return None

    def redact(self, text: str) -> str:
        """``text`` without this source's credentials, for any message that echoes input."""
        return text

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # ------------------------------------------------------------ what every source gets

    def count_request(self, weight: int = 0) -> None:
        """Record one HTTP (or in-process) request in the source totals and the job's meter."""
        self.stats.requests += 1
        self.stats.weight_used += weight
        meter = current_meter()
        if meter is not None:
            meter.requests += 1
            meter.weight += weight

    def validated(self, table: pa.Table, symbol: str, timeframe: str, now_ms: int) -> pa.Table:
        """``table`` through reply validation, counting a rejection in the source's stats."""
        from candlekeep.sources.validate import validate_candles

        try:
            return validate_candles(table, source=self.name, symbol=symbol, timeframe=timeframe,
                                    now_ms=now_ms)
        except BadReplyError:
            self.stats.rejected_replies += 1
            raise

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One logical request: a slot among the requests in flight, each attempt through
        the circuit breaker (CircuitOpenError at once while the provider is down), retries
        of transient failures per the policy (sleeping on the injected clock, and stopping
        as soon as the circuit opens), errors translated and the last few kept in the
        stats."""

        async def attempt() -> T:
            async with self._in_flight:
                with self.circuit.guard():
                    try:
                        return await fn()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        raise self._translate(exc) from None

        def on_retry(retry: int, exc: TransientSourceError, delay: float) -> None:
            self.stats.retries += 1
            self.circuit.check()  # open now: fail fast rather than sleep through backoffs

        try:
            return await call_with_retry(attempt, policy=self.retry_policy, clock=self.clock,
                                         rng=self._rng, on_retry=on_retry, what=what)
        except SourceError as exc:
            self.stats.errors.append(str(exc))
            del self.stats.errors[:-50]
            raise

    async def markets(self) -> dict[str, MarketInfo]:
        """The markets, loaded once per source (again when a symbol is missing from a list
        older than ``markets_ttl_ms()``: a daemon outlives listings)."""
        if self._markets is None:
            async with self._markets_lock:
                if self._markets is None:
                    self._markets = await self._load_markets()
                    self._markets_at = self.clock.now_ms()
        return self._markets

    def markets_ttl_ms(self) -> int:
        """``MARKETS_TTL_MS``, doubled while the provider is unwell (circuit not closed, or
        judged degraded): a reload it would likely fail is not worth asking for sooner."""
        unwell = self.degraded or self.circuit.state is not CircuitState.CLOSED
        return MARKETS_TTL_MS * 2 if unwell else MARKETS_TTL_MS

    def _unlisted_market(self, symbol: str) -> MarketInfo | None:
        """A market the exchange knows but ``_load_markets`` left out (another market
        type); None if there is none. Override to accept such symbols."""
        return None

    async def market(self, symbol: str) -> MarketInfo:
        """``symbol``'s market; SourceError naming close matches when there is none."""
        markets = await self.markets()
        info = markets.get(symbol)
        if info is None and self.clock.now_ms() - self._markets_at > self.markets_ttl_ms():
            async with self._markets_lock:
                self._markets = None
            markets = await self.markets()  # listed since the last load?
            info = markets.get(symbol)
        if info is None:
            info = self._unlisted_market(symbol)
        if info is None:
            close = difflib.get_close_matches(symbol, list(markets), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SourceError(self.redact(f"source {self.name}: no market {symbol!r}{hint}"))
        return info

    def timeframe(self, timeframe: str) -> Timeframe:
        """``timeframe`` parsed, or SourceError when this source does not serve it."""
        try:
            tf = parse_timeframe(timeframe)
        except ValueError as exc:
            raise SourceError(f"source {self.name}: {exc}") from None
        served = self.supported_timeframes()
        if served is not None and timeframe not in served:
            listed = ", ".join(t for t in TIMEFRAMES if t in served)
            raise SourceError(f"source {self.name}: no timeframe {timeframe} (it serves "
                              f"{listed})")
        return tf

    def page_limit(self, timeframe: str) -> int:
        """Candles per request that maximise candles per unit of rate-limit weight."""
        return self.caps.page_limit(timeframe)

    def horizon_ms(self, timeframe: str) -> int | None:
        """Open time of the oldest candle the exchange serves now; None if unlimited."""
        return self.caps.horizon_ms(timeframe, self.clock.now_ms())

    async def fetch_candles(self, symbol: str, timeframe: str, start_ms: int,
                            end_ms: int) -> pa.Table:
        """Closed, validated candles in ``[start_ms, end_ms)``, page by page (a range
        reaching past the history horizon starts at it: older candles cannot be had)."""
        import pyarrow as pa

        from candlekeep.core.schema import empty_candles

        tf = self.timeframe(timeframe)
        await self.market(symbol)
        first = tf.ceil(start_ms)
        horizon = self.horizon_ms(timeframe)
        if horizon is not None:
            first = max(first, horizon)
        end = min(end_ms, tf.floor(self.clock.now_ms()))  # only closed candles exist
        if end <= first:
            return empty_candles()
        step = self.page_limit(tf.name) * tf.ms
        windows = [(s, min(s + step, end)) for s in range(first, end, step)]
        if self.caps.concurrent_pages:
            pages = await gather_all([self._page(symbol, tf, s, e) for s, e in windows])
        else:
            pages = []
            for s, e in windows:
                pages.append(await self._page(symbol, tf, s, e))
                await asyncio.sleep(0)  # a long backfill must not starve the event loop
        pages = [p for p in pages if p.num_rows]
        if not pages:
            return empty_candles()
        return pa.concat_tables(pages) if len(pages) > 1 else pages[0]

    async def first_candle_ms(self, symbol: str, timeframe: str, since_ms: int) -> int | None:
        """Open time of the first closed candle at or after ``since_ms`` (or the history
        horizon, if later): one small request, or a search where a request spans a limited
        time (see ``_first_in_spans``)."""
        tf = self.timeframe(timeframe)
        await self.market(symbol)
        since = tf.ceil(since_ms)
        horizon = self.horizon_ms(timeframe)
        if horizon is not None:
            since = max(since, horizon)
        if self.caps.max_span_ms is not None:
            return await self._first_in_spans(symbol, tf, since)
        table = await self._checked_page(symbol, tf, since, None, 1)
        return _first_ts(table)

    async def _page(self, symbol: str, tf: Timeframe, start: int, end: int) -> pa.Table:
        """The validated candles of ``[start, end)`` from one request."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = await self._checked_page(symbol, tf, start, end, tf.count(start, end))
        ts = pc.cast(table["ts"], pa.int64())
        inside = pc.and_(pc.greater_equal(ts, start), pc.less(ts, end))
        return table if pc.all(inside).as_py() else table.filter(inside)

    async def _checked_page(self, symbol: str, tf: Timeframe, start: int, end: int | None,
                            limit: int) -> pa.Table:
        table = await self.call(
            f"{self.name} {symbol} {tf.name} candles from {fmt_ms(start)}",
            lambda: self._request_candles(symbol, tf, start, end, limit))
        return self.validated(table, symbol, tf.name, self.clock.now_ms())

    async def _first_in_spans(self, symbol: str, tf: Timeframe, since: int) -> int | None:
        """The first candle where one request covers at most ``max_span_ms``.

        Binance COIN-M answers a startTime-only request with the *newest* candles of the
        200 days after it, so one small request finds neither a listing years later nor the
        first candle of the span. Weekly candles, a span's worth a request, find the week
        it opens in; pages of ``tf`` from there find the candle.
        """
        week = parse_timeframe("1w")
        now = self.clock.now_ms()
        end = tf.floor(now)  # closed candles only
        served = self.supported_timeframes()
        if tf.ms >= week.ms or (served is not None and "1w" not in served):
            return await self._first_in_pages(symbol, tf, since, end)
        cursor = since
        while cursor < end:
            first_week = await self._first_in_pages(symbol, week, week.floor(cursor),
                                                    week.floor(now))
            if first_week is None:  # no closed week has candles: only this week can
                return await self._first_in_pages(symbol, tf, max(cursor, week.floor(now)),
                                                  end)
            found = await self._first_in_pages(symbol, tf, max(cursor, first_week),
                                               min(first_week + week.ms, end))
            if found is not None:
                return found
            cursor = first_week + week.ms  # that week's candles all opened before ``since``
        return None

    async def _first_in_pages(self, symbol: str, tf: Timeframe, start: int,
                              end: int) -> int | None:
        step = self.page_limit(tf.name) * tf.ms
        for lo in range(start, end, step):
            found = _first_ts(await self._page(symbol, tf, lo, min(lo + step, end)))
            if found is not None:
                return found
        return None


def _first_ts(table: pa.Table) -> int | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return None
    return int(pc.min(pc.cast(table["ts"], pa.int64())).as_py())


def describe_horizon(source: Source, timeframe: str) -> str | None:
    """The history horizon in words, for messages: None when unlimited."""
    horizon = source.horizon_ms(timeframe)
    if horizon is None:
        return None
    return (f"{source.name} serves only its newest {source.caps.history_limit} {timeframe} "
            f"candles (from {fmt_ms(horizon)})")


__all__ = ["MarketInfo", "Source", "SourceStats", "describe_horizon"]
