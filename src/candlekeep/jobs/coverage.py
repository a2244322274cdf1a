"""Per-series coverage: what is stored against what the grid says should be."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.jobs.runtime import Runtime
from candlekeep.stores.base import SeriesSpan


@dataclass(frozen=True, slots=True)
class Coverage:
    series: SeriesKey
    store: str
    first_ms: int | None
    last_ms: int | None
    stored: int
    expected: int
    missing: int
    confirmed_empty: int
    open_gaps: int

    @property
    def coverage_pct(self) -> float:
        if not self.expected:
            return 0.0
        return 100.0 * min(self.expected, self.stored + self.confirmed_empty) / self.expected

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["series"] = str(self.series)
        d.update(source=self.series.source, symbol=self.series.symbol,
                 timeframe=self.series.timeframe, coverage_pct=round(self.coverage_pct, 4))
        return d


def coverage(rt: Runtime) -> list[Coverage]:
    """One row per configured series; confirmed-empty gaps count as covered."""
    plans = rt.plans()
    empty: dict[SeriesKey, int] = defaultdict(int)
    open_gaps: dict[SeriesKey, int] = defaultdict(int)
    for g in rt.state.list_gaps(status=["confirmed_empty", "open", "failed"]):
        if g.status == "confirmed_empty":
            empty[g.series] += g.candles(parse_timeframe(g.series.timeframe).ms)
        else:
            open_gaps[g.series] += 1
    spans: dict[tuple[str, SeriesKey], SeriesSpan] = {}
    for store_name in {p.store for p in plans}:
        for s in rt.store(store_name).spans():
            spans[(store_name, s.series)] = s
    out = []
    for p in plans:
        tf = parse_timeframe(p.key.timeframe)
        span = spans.get((p.store, p.key))
        if span is None:
            out.append(Coverage(p.key, p.store, None, None, 0, 0, 0, 0, open_gaps[p.key]))
            continue
        expected = (span.last_ms - span.first_ms) // tf.ms + 1
        out.append(Coverage(p.key, p.store, span.first_ms, span.last_ms, span.count, expected,
                            expected - span.count, empty[p.key], open_gaps[p.key]))
    return out
