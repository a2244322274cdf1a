"""Which archive files, and which REST ranges, cover a backfill range.

Whole past months come from monthly files; the current month's past days from daily files;
today (and, for 1d/1w, the whole current month) from REST. A file only ever holds closed
candles of a period that has ended, so the archive's part stops at today 00:00 UTC and never
reaches the candle still open at ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from candlekeep.core.timeframes import DAY_MS, parse_timeframe
from candlekeep.sources.binance_archive.paths import (
    ArchiveFile,
    Market,
    Period,
    day_ms,
    month_end,
    ms_day,
)

# A past month only partly in range takes daily files up to this many days, else the
# monthly file (one request instead of many; the rows outside the range are dropped).
PARTIAL_MONTH_DAILY_MAX = 7


@dataclass(frozen=True, slots=True)
class FilePiece:
    """A file and the part of it wanted: rows opening in [start_ms, end_ms)."""

    file: ArchiveFile
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class RestRange:
    """A range [start_ms, end_ms) the archive cannot serve: fetched through REST."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class BulkPlan:
    files: tuple[FilePiece, ...]
    rest: tuple[RestRange, ...]


def plan_range(market: Market, symbol_id: str, timeframe: str, start_ms: int, end_ms: int,
               now_ms: int, *, partial_month_daily_max: int = PARTIAL_MONTH_DAILY_MAX
               ) -> BulkPlan:
    """The files and REST ranges covering [start_ms, end_ms) for one series at ``now_ms``.

    Daily files are used only below 1d: for 1d the current month is at most a few candles,
    one REST page, cheaper than a download per day. Above 1d everything is REST.
    """
    tf = parse_timeframe(timeframe)
    if end_ms <= start_ms:
        return BulkPlan((), ())
    if tf.ms > DAY_MS:
        # A 3d or 1w candle opening late in a month closes in the next one, after the
        # month's file was written (binance-public-data #134, #298: monthly 1w files missing
        # or cutting their last week). Few candles anyway: one REST page.
        return BulkPlan((), (RestRange(start_ms, end_ms),))
    today = ms_day(now_ms)
    this_month = today.replace(day=1)
    intraday = tf.ms < DAY_MS
    archive_end = min(end_ms, day_ms(today if intraday else this_month), tf.floor(now_ms))
    pieces: list[FilePiece] = []
    month = ms_day(start_ms).replace(day=1)
    while day_ms(month) < archive_end:
        nxt = month_end(month)
        lo, hi = max(start_ms, day_ms(month)), min(archive_end, day_ms(nxt))
        days = (ms_day(hi - 1) - ms_day(lo)).days + 1
        whole = (lo, hi) == (day_ms(month), day_ms(nxt))
        if month < this_month and (whole or not intraday or days > partial_month_daily_max):
            pieces.append(FilePiece(
                ArchiveFile(market, symbol_id, timeframe, Period.MONTHLY, month), lo, hi))
        else:
            day = ms_day(lo)
            while day_ms(day) < hi:
                f = ArchiveFile(market, symbol_id, timeframe, Period.DAILY, day)
                pieces.append(FilePiece(f, max(lo, f.start_ms), min(hi, f.end_ms)))
                day += timedelta(days=1)
        month = nxt
    rest_start = max(start_ms, archive_end)
    rest = (RestRange(rest_start, end_ms),) if rest_start < end_ms else ()
    return BulkPlan(tuple(pieces), rest)
