"""Missing ranges of the series: the gaps table as ``gaps list``, ``/gaps`` and
``/gaps/summary`` show it."""

from __future__ import annotations

from dataclasses import dataclass

from candlekeep.core.timeframes import DAY_MS, parse_timeframe
from candlekeep.core.timeutil import iso_ms
from candlekeep.state.reader import Reader
from candlekeep.state.rows import GapRow


@dataclass(frozen=True, slots=True)
class GapView:
    """A missing range of a series; ``gap_start``/``gap_end`` are inclusive candle open
    times. ``status``: open, repaired, confirmed_empty (the exchange has nothing there;
    counts as covered) or failed (given up after repeated errors)."""

    id: int
    series: str
    source: str
    symbol: str
    timeframe: str
    gap_start: int
    gap_end: int
    gap_start_iso: str | None
    gap_end_iso: str | None
    candles: int
    status: str
    detected_at: int
    repaired_at: int | None
    attempts: int
    empty_attempts: int
    last_error: str | None


def gap_view(g: GapRow) -> GapView:
    s = g.series
    return GapView(g.id, str(s), s.source, s.symbol, s.timeframe, g.gap_start, g.gap_end,
                   iso_ms(g.gap_start), iso_ms(g.gap_end),
                   g.candles(parse_timeframe(s.timeframe).ms), g.status, g.detected_at,
                   g.repaired_at, g.attempts, g.empty_attempts, g.last_error)


@dataclass(frozen=True, slots=True)
class GapPage:
    """Gaps in series order; ``next_offset`` is None on the last page."""

    items: list[GapView]
    limit: int
    offset: int
    next_offset: int | None


def gaps(reader: Reader, *, status: str | None = None, source: str | None = None,
         symbol: str | None = None, timeframe: str | None = None, limit: int | None = None,
         offset: int = 0) -> GapPage:
    """``limit`` None: every matching gap (the CLI); the API always bounds it."""
    rows = reader.gaps(status, source, symbol, timeframe,
                       None if limit is None else limit + 1, offset)
    more = limit is not None and len(rows) > limit
    shown = rows[:limit] if limit is not None else rows
    return GapPage([gap_view(g) for g in shown], limit if limit is not None else len(rows),
                   offset, offset + len(shown) if more else None)


@dataclass(frozen=True, slots=True)
class GapSummary:
    open: int
    failed: int
    confirmed_empty: int
    repaired_24h: int
    """Gaps whose repair was recorded in the last 24 hours."""
    oldest_open: GapView | None
    """The open gap detected first."""
    oldest_open_age_ms: int | None
    """How long ago that gap was detected."""


def gap_summary(reader: Reader, now_ms: int) -> GapSummary:
    counts = reader.gap_status_counts()
    oldest = reader.oldest_open_gap()
    return GapSummary(counts.get("open", 0), counts.get("failed", 0),
                      counts.get("confirmed_empty", 0), reader.repaired_since(now_ms - DAY_MS),
                      gap_view(oldest) if oldest else None,
                      max(0, now_ms - oldest.detected_at) if oldest else None)
