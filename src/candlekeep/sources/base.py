"""The contract every market-data source fulfils."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import pyarrow as pa

from candlekeep.core.errors import BadReplyError
from candlekeep.sources.metering import current_meter
from candlekeep.sources.validate import validate_candles


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
    paginates with ``page_limit`` candles per request, concurrently within the rate budget.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = SourceStats()

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
        try:
            return validate_candles(table, source=self.name, symbol=symbol, timeframe=timeframe,
                                    now_ms=now_ms)
        except BadReplyError:
            self.stats.rejected_replies += 1
            raise

    @abc.abstractmethod
    async def markets(self) -> dict[str, MarketInfo]: ...

    @abc.abstractmethod
    def page_limit(self, timeframe: str) -> int:
        """Candles per request that maximise candles per unit of rate-limit weight."""

    @abc.abstractmethod
    async def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pa.Table: ...

    @abc.abstractmethod
    async def first_candle_ms(self, symbol: str, timeframe: str, since_ms: int) -> int | None:
        """Open time of the first candle at or after ``since_ms`` (listing probe)."""

    def supported_timeframes(self) -> set[str] | None:
        """Timeframes this source serves, or None when unknown until markets load."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

