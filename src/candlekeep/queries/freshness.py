"""Freshness and ingestion status, from the state DB alone (``freshness`` verdicts and
``series_state``): no candle table is read, whatever its size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import iso_ms
from candlekeep.state.statuses import FreshnessStatus, SubjectKind

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.state.reader import Reader


@dataclass(frozen=True, slots=True)
class FreshnessView:
    """The last freshness check's verdict on one series or dataset."""

    kind: str
    """``series`` or ``dataset``."""
    store: str
    subject: str
    """``source:symbol:timeframe`` for a series, the dataset's name for a dataset."""
    status: FreshnessStatus
    newest_ms: int | None
    newest_utc: str | None
    age_ms: int | None
    threshold_ms: int
    rows: int | None
    detail: str | None
    checked_at: int
    status_since: int


@dataclass(frozen=True, slots=True)
class SeriesStatusView:
    """A configured series' newest stored candle, as the write path last recorded it."""

    source: str
    symbol: str
    timeframe: str
    store: str
    status: FreshnessStatus
    newest_ms: int | None
    """Open time of the newest stored candle."""
    newest_utc: str | None
    age_ms: int | None
    """Since the newest candle closed (0 when the last closed candle is stored)."""
    threshold_ms: int
    rows_estimate: int
    """Exact at the last freshness check, plus rows written since: an upper bound."""
    updated_at: int | None
    detail: str | None

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.source, self.symbol, self.timeframe)


def freshness(reader: Reader) -> list[FreshnessView]:
    return [FreshnessView(r.kind, r.store, r.subject, FreshnessStatus(r.status), r.newest_ms,
                          iso_ms(r.newest_ms), r.age_ms, r.threshold_ms, r.rows, r.detail,
                          r.checked_at, r.status_since)
            for r in reader.freshness()]


def ingestion_status(reader: Reader, config: Config, now_ms: int, *,
                     source: str | None = None, symbol: str | None = None,
                     timeframe: str | None = None) -> list[SeriesStatusView]:
    """One row per configured series (filtered), judged now with the freshness rules from
    the newest candle the write path recorded; ERROR where the last freshness check could
    not read the series' store (no write path can tell that)."""
    from candlekeep.freshness.rules import Assessment, FreshnessRules, assess
    from candlekeep.jobs.runtime import series_plans

    rules = FreshnessRules(config.freshness)
    state = {(r.store, r.series): r for r in reader.series_state()}
    unreadable = {(v.store, v.subject): v.detail for v in reader.freshness()
                  if v.kind == SubjectKind.SERIES and v.status == FreshnessStatus.ERROR}
    out = []
    for plan in series_plans(config, source, symbol, timeframe):
        row = state.get((plan.store, plan.key))
        newest = row.last_ms if row is not None else None
        threshold = rules.series(plan.key)
        if plan.end_ms is not None:  # a closed range: complete or not, it never ages
            verdict = Assessment(FreshnessStatus.OK if newest is not None
                                 else FreshnessStatus.MISSING, None, "closed range")
        else:
            verdict = assess(newest, threshold, now_ms)
        if (plan.store, str(plan.key)) in unreadable:  # the last check could not read it
            verdict = Assessment(FreshnessStatus.ERROR, verdict.age_ms,
                                 unreadable[(plan.store, str(plan.key))])
        k = plan.key
        out.append(SeriesStatusView(
            k.source, k.symbol, k.timeframe, plan.store, verdict.status, newest,
            iso_ms(newest), verdict.age_ms, threshold.max_age_ms,
            row.rows if row is not None else 0, row.updated_at if row is not None else None,
            verdict.detail))
    return out
