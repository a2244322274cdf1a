"""The contract every store fulfils. Stores are synchronous; jobs call them off the loop."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import pyarrow as pa

from candlekeep.core.series import SeriesKey


@dataclass(frozen=True, slots=True)
class SeriesSpan:
    series: SeriesKey
    first_ms: int
    last_ms: int
    count: int


class Store(abc.ABC):
    """Idempotent candle storage: the key is ``(source, symbol, timeframe, ts)``; writing the
    same candle twice leaves one row holding the later values."""

    name: str

    @abc.abstractmethod
    def upsert_candles(self, batch: pa.Table) -> int:
        """Write ``batch`` (CANDLE_SCHEMA); returns rows written. De-duplicates the batch on
        the key first, keeping the last row."""

    @abc.abstractmethod
    def spans(
        self, source: str | None = None, series: SeriesKey | None = None
    ) -> list[SeriesSpan]:
        """First, last and count per stored series (all, one source's, or one)."""

    def span(self, series: SeriesKey) -> SeriesSpan | None:
        found = self.spans(series=series)
        return found[0] if found else None

    def latest(self, series: SeriesKey) -> int | None:
        s = self.span(series)
        return s.last_ms if s else None

    @abc.abstractmethod
    def find_gaps(
        self,
        series: SeriesKey | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> pa.Table:
        """Missing ranges (GAP_SCHEMA, inclusive candle open times) inside each series' stored
        span, optionally clipped to ``[start_ms, end_ms)``. Runs in the database."""

    @abc.abstractmethod
    def read_candles(
        self, series: SeriesKey, start_ms: int | None = None, end_ms: int | None = None
    ) -> pa.Table:
        """Candles of one series in ``[start_ms, end_ms)``, ordered by ts (CANDLE_SCHEMA)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
