"""Per-series coverage without reading a candle table: each series' stored range and row
count from ``series_state``, its confirmed-empty and open gaps from the gaps table.

``series_state`` rows are exact after a reconciliation (the freshness check,
``candlekeep coverage``) and an upper bound in between (every upsert adds what it wrote,
re-written candles included): ``stored_exact`` says which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import iso_ms
from candlekeep.jobs.runtime import SeriesPlan
from candlekeep.state.reader import Reader
from candlekeep.state.statuses import HORIZON_CHECKPOINT

LIVE_GAPS = ("open", "failed")


@dataclass(frozen=True, slots=True)
class CoverageView:
    series: str
    source: str
    symbol: str
    timeframe: str
    store: str
    first_ms: int | None
    last_ms: int | None
    first_iso: str | None
    last_iso: str | None
    stored: int
    stored_exact: bool
    """Whether ``stored`` is a count (the last reconciliation is the last change) rather
    than an upper bound."""
    expected: int
    """Candles the grid holds from the first to the last stored one."""
    missing: int
    confirmed_empty: int
    """Candles inside confirmed-empty gaps: the exchange has none there; they count as
    covered."""
    open_gaps: int
    """Open and failed gaps of the series."""
    coverage_pct: float
    note: str | None = None
    """Why history is shorter than configured, e.g. "history starts at the exchange
    horizon" (the exchange serves only its newest N candles; older ones cannot be had)."""
    fallback_for: str | None = None
    """Set on rows a fallback source stored in place of this primary source's (the series
    names the fallback; ``fallback:`` in the series config)."""


def coverage(reader: Reader, plans: Sequence[SeriesPlan]) -> list[CoverageView]:
    """One row per configured series (``plans``), in their order, each followed by the
    rows its fallback sources stored in its place (``fallback_for`` set)."""
    state = {(r.store, r.series): r for r in reader.series_state()}
    horizons = reader.checkpoint_positions(HORIZON_CHECKPOINT)
    empty: dict[SeriesKey, int] = defaultdict(int)
    live: dict[SeriesKey, int] = defaultdict(int)
    for total in reader.gap_totals(("confirmed_empty", *LIVE_GAPS)):
        if total.status == "confirmed_empty":
            empty[total.series] += total.candles(parse_timeframe(total.series.timeframe).ms)
        else:
            live[total.series] += total.count
    def view(k: SeriesKey, store: str, fallback_for: str | None = None) -> CoverageView:
        row = state.get((store, k))
        first = row.first_ms if row is not None else None
        last = row.last_ms if row is not None else None
        if row is None or first is None or last is None:
            return CoverageView(str(k), k.source, k.symbol, k.timeframe, store, None, None,
                                None, None, 0, True, 0, 0, 0, live[k], 0.0,
                                fallback_for=fallback_for)
        expected = (last - first) // parse_timeframe(k.timeframe).ms + 1
        stored = min(row.rows, expected)
        exact = row.scanned_at is not None and row.scanned_at >= row.updated_at
        covered = min(expected, stored + empty[k])
        cut = horizons.get(k)
        note = (f"history starts at the exchange horizon ({iso_ms(cut)})"
                if cut is not None and first >= cut else None)
        return CoverageView(
            str(k), k.source, k.symbol, k.timeframe, store, first, last, iso_ms(first),
            iso_ms(last), stored, exact, expected, expected - stored, empty[k], live[k],
            round(100.0 * covered / expected, 4), note, fallback_for)

    configured = {(p.store, p.key) for p in plans}
    out: list[CoverageView] = []
    shown: set[tuple[str, SeriesKey]] = set()
    for p in plans:
        out.append(view(p.key, p.store))
        for name in p.fallback:  # rows a fallback stored in this one's place, if any
            k = SeriesKey(name, p.key.symbol, p.key.timeframe)
            if (p.store, k) in state and (p.store, k) not in configured | shown:
                shown.add((p.store, k))
                out.append(view(k, p.store, p.key.source))
    return out
