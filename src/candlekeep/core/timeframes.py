"""Timeframes as integer milliseconds on a fixed UTC grid.

Everything in candlekeep measures candle time as epoch milliseconds (int64): it is what
exchanges speak, what Arrow's timestamp[ms] stores, and arithmetic on it is exact.
Weekly candles open on Monday 00:00 UTC (Binance and most exchanges), so the 1w grid is
offset from the Unix epoch, which fell on a Thursday.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-05 was the first Monday after the epoch

TIMEFRAMES: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "1w": WEEK_MS,
}


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One candle width and the grid its open times sit on."""

    name: str
    ms: int
    offset_ms: int = 0

    def floor(self, ts_ms: int) -> int:
        """Open time of the candle containing ``ts_ms``."""
        return (ts_ms - self.offset_ms) // self.ms * self.ms + self.offset_ms

    def ceil(self, ts_ms: int) -> int:
        """First grid point at or after ``ts_ms``."""
        floored = self.floor(ts_ms)
        return floored if floored == ts_ms else floored + self.ms

    def on_grid(self, ts_ms: int) -> bool:
        return (ts_ms - self.offset_ms) % self.ms == 0

    def last_closed_open(self, now_ms: int) -> int:
        """Open time of the newest candle that has closed by ``now_ms``."""
        return self.floor(now_ms) - self.ms

    def count(self, start_ms: int, end_ms: int) -> int:
        """Grid points in ``[start_ms, end_ms)``."""
        if end_ms <= start_ms:
            return 0
        return (self.ceil(end_ms) - self.ceil(start_ms)) // self.ms

    def __str__(self) -> str:
        return self.name


def parse_timeframe(name: str) -> Timeframe:
    """The timeframe called ``name``; ValueError naming the valid choices otherwise."""
    try:
        ms = TIMEFRAMES[name]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {name!r}; valid: {', '.join(TIMEFRAMES)}"
        ) from None
    return Timeframe(name, ms, _MONDAY_OFFSET_MS if name == "1w" else 0)
