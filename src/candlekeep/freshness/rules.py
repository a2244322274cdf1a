"""The thresholds, and the one function that turns a newest time into a verdict.

Everything that shows freshness (the check, ``/ingestion/status``, the dashboard, reports)
judges through ``assess`` with thresholds from ``FreshnessRules``, so none can disagree
about what STALE means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from candlekeep.config.ops import FreshnessConfig, SeriesFreshness
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_duration
from candlekeep.state.statuses import FreshnessStatus

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Threshold:
    """How old the newest row may be, and when staleness is expected."""

    max_age_ms: int
    quiet_hours: tuple[str, ...] = ()
    step_ms: int = 0
    """A series' timeframe: its newest candle's age counts from when it closed."""


@dataclass(frozen=True, slots=True)
class Assessment:
    status: FreshnessStatus
    age_ms: int | None
    """How long ago the newest row's period ended (a candle's close); None when missing."""
    detail: str | None = None


class FreshnessRules:
    """``freshness:`` resolved per subject: the last matching series rule wins."""

    def __init__(self, cfg: FreshnessConfig) -> None:
        self.cfg = cfg

    def series(self, key: SeriesKey) -> Threshold:
        tf_ms = parse_timeframe(key.timeframe).ms
        candles, grace = self.cfg.candles, self.cfg.grace
        max_age: float | None = None
        quiet: tuple[str, ...] = ()
        for rule in self.cfg.series:
            if not _matches(rule, key):
                continue
            candles = rule.candles or candles
            grace = rule.grace if rule.grace is not None else grace
            max_age = rule.max_age if rule.max_age is not None else max_age
            quiet = tuple(rule.quiet_hours) or quiet
        limit = int(max_age * 1000) if max_age is not None else candles * tf_ms + int(
            grace * 1000)
        return Threshold(limit, quiet, tf_ms)

    def dataset(self, store: str, dataset: str) -> Threshold | None:
        """The rule for a watched dataset; None when it is not watched."""
        for d in reversed(self.cfg.datasets):
            if d.store == store and d.dataset == dataset:
                return Threshold(int(d.max_age * 1000), tuple(d.quiet_hours))
        return None


def _matches(rule: SeriesFreshness, key: SeriesKey) -> bool:
    return ((rule.source is None or rule.source == key.source)
            and (rule.symbol is None or rule.symbol == key.symbol)
            and (rule.timeframe is None or rule.timeframe == key.timeframe))


def _bounds(window: str) -> tuple[int, int]:
    """A ``HH:MM-HH:MM`` window as minutes of the day (start, end)."""
    start, end = (int(p[:2]) * 60 + int(p[3:]) for p in window.split("-"))
    return start, end


def in_quiet_hours(windows: Sequence[str], now_ms: int) -> bool:
    """Whether ``now_ms`` falls in one of the ``HH:MM-HH:MM`` UTC windows (a window may
    wrap midnight: 22:00-06:00)."""
    minute = (now_ms % DAY_MS) // 60_000
    for w in windows:
        start, end = _bounds(w)
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if inside:
            return True
    return False


def last_quiet_end(windows: Sequence[str], now_ms: int) -> int | None:
    """When the latest quiet window ended, at or before ``now_ms``."""
    day = now_ms // DAY_MS * DAY_MS
    ends = [day + k * DAY_MS + _bounds(w)[1] * 60_000 for w in windows for k in (0, -1)]
    past = [e for e in ends if e <= now_ms]
    return max(past) if past else None


def assess(newest_ms: int | None, threshold: Threshold, now_ms: int) -> Assessment:
    """The verdict on a subject whose newest row is at ``newest_ms`` (a candle's open time
    for series, whose age then counts from its close)."""
    if newest_ms is None:
        return Assessment(FreshnessStatus.MISSING, None, "nothing stored")
    age = max(0, now_ms - (newest_ms + threshold.step_ms))
    if age <= threshold.max_age_ms:
        return Assessment(FreshnessStatus.OK, age)
    if in_quiet_hours(threshold.quiet_hours, now_ms):
        return Assessment(FreshnessStatus.OK, age, "quiet hours: staleness expected")
    quiet_end = last_quiet_end(threshold.quiet_hours, now_ms)
    if quiet_end is not None and now_ms - quiet_end <= threshold.max_age_ms:
        # Nobody traded in the quiet hours: the allowance starts when they ended.
        return Assessment(FreshnessStatus.OK, age,
                          f"quiet hours ended {fmt_duration(now_ms - quiet_end)} ago")
    return Assessment(FreshnessStatus.STALE, age, f"newest is {fmt_duration(age)} old; "
                      f"allowed {fmt_duration(threshold.max_age_ms)}")
