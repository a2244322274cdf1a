"""Checks of what the tracker recorded, run after each update.

- continuity: a symbol's files run without a hole from its first to its last published
  date (a hole is a warning: Binance has a few days it never published);
- completeness: each settled date has at least ``min_symbols`` files (fewer is an error:
  the probe, the archive or the symbol list went wrong);
- cross-check: the exchange's live trading symbols have a file on the newest settled
  date, at least ``minimum`` of them (fewer is an error; when the exchange cannot be asked
  from here, HTTP 451, it is a warning: nothing to compare with, nothing known wrong).

Binance publishes a day's files up to about three days late, so a date is *settled* once
``publication_buffer_days`` have passed; newer dates are not judged by any validator.
The functions are pure: the job hands them what it read and probed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.availability.dataset import ProbeStatus

EXAMPLES = 5


class Severity(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    WARNING = "warning"
    ERROR = "error"


class Validator(StrEnum):
    CONTINUITY = "continuity"
    COMPLETENESS = "completeness"
    CROSS_CHECK = "cross_check"


@dataclass(frozen=True, slots=True)
class Finding:
    """One validator's verdict; ``details`` is plain JSON (the run's details carry it)."""

    validator: Validator
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"{self.validator}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"validator": self.validator.value, "severity": self.severity.value,
                "message": self.message, **self.details}


def settled_until(today: date, buffer_days: int) -> date:
    """The newest date whose files are due: ``today`` minus the publication buffer."""
    return today - timedelta(days=buffer_days)


@dataclass(frozen=True, slots=True)
class ContinuityGap:
    symbol: str
    first: date
    last: date
    missing: tuple[date, ...]


def continuity(history: pa.Table, *, settled: date) -> Finding:
    """Holes between each symbol's first and last available date (``history``: one row
    per probed (symbol, date) with ``symbol``, ``date``, ``status``). A date without any
    row counts as a hole too; dates after ``settled`` do not (their files may come)."""
    avail = history.filter(pc.equal(history["status"], ProbeStatus.AVAILABLE.value))
    if avail.num_rows == 0:
        return Finding(Validator.CONTINUITY, Severity.SKIPPED, "no available file recorded")
    spans = avail.group_by("symbol", use_threads=False).aggregate(
        [("date", "min"), ("date", "max"), ("date", "count")]).to_pydict()
    suspects = {}
    for sym, lo, hi, n in zip(spans["symbol"], spans["date_min"], spans["date_max"],
                              spans["date_count"], strict=True):
        top = min(hi, settled)
        if top > lo and n < (hi - lo).days + 1:
            suspects[sym] = (lo, hi, top)
    gaps: list[ContinuityGap] = []
    if suspects:
        mine = avail.filter(pc.is_in(avail["symbol"], pa.array(list(suspects))))
        have: dict[str, set[date]] = {}
        for sym, d in zip(mine["symbol"].to_pylist(), mine["date"].to_pylist(), strict=True):
            have.setdefault(sym, set()).add(d)
        for sym in sorted(suspects):
            lo, hi, top = suspects[sym]
            missing = tuple(lo + timedelta(days=i) for i in range((top - lo).days + 1)
                            if lo + timedelta(days=i) not in have[sym])
            if missing:
                gaps.append(ContinuityGap(sym, lo, hi, missing))
    checked = len(spans["symbol"])
    if not gaps:
        return Finding(Validator.CONTINUITY, Severity.OK,
                       f"{checked} symbols without a hole", {"symbols": checked})
    dates = sum(len(g.missing) for g in gaps)
    shown = ", ".join(f"{g.symbol} ({_dates(g.missing)})" for g in gaps[:EXAMPLES])
    more = f" and {len(gaps) - EXAMPLES} more" if len(gaps) > EXAMPLES else ""
    return Finding(
        Validator.CONTINUITY, Severity.WARNING,
        f"{len(gaps)} of {checked} symbols miss {dates} dates between their first and last "
        f"file: {shown}{more}",
        {"symbols": checked, "gaps": [{"symbol": g.symbol, "first": g.first.isoformat(),
                                       "last": g.last.isoformat(),
                                       "missing": [d.isoformat() for d in g.missing]}
                                      for g in gaps[:100]]})


def completeness(available: Mapping[date, int], dates: Sequence[date], *, min_symbols: int,
                 settled: date) -> Finding:
    """Each settled date of ``dates`` has at least ``min_symbols`` available files."""
    judged = [d for d in dates if d <= settled]
    waiting = len(dates) - len(judged)
    note = (f"; {waiting} newer dates inside the publication buffer not judged"
            if waiting else "")
    if not judged:
        return Finding(Validator.COMPLETENESS, Severity.SKIPPED,
                       f"no settled date probed (settled up to {settled}){note}")
    short = [(d, available.get(d, 0)) for d in judged if available.get(d, 0) < min_symbols]
    details = {"min_symbols": min_symbols, "dates": len(judged),
               "short": [{"date": d.isoformat(), "available": n} for d, n in short]}
    if short:
        shown = ", ".join(f"{d} ({n})" for d, n in short[:EXAMPLES])
        more = f" and {len(short) - EXAMPLES} more" if len(short) > EXAMPLES else ""
        return Finding(Validator.COMPLETENESS, Severity.ERROR,
                       f"{len(short)} of {len(judged)} settled dates have fewer than "
                       f"{min_symbols} files: {shown}{more}{note}", details)
    low = min(available.get(d, 0) for d in judged)
    return Finding(Validator.COMPLETENESS, Severity.OK,
                   f"{len(judged)} settled dates with at least {min_symbols} files "
                   f"(fewest {low}){note}", details)


@dataclass(frozen=True, slots=True)
class LiveSymbols:
    """The exchange's live trading symbols (exchange ids), or why they are unknown."""

    symbols: frozenset[str] | None
    problem: str | None = None
    geo_blocked: bool = False


def cross_check(live: LiveSymbols, available_on: Collection[str], day: date | None, *,
                minimum: float) -> Finding:
    """The share of ``live`` symbols with a file on ``day`` (the newest settled date)."""
    if live.symbols is None:
        if live.geo_blocked:
            return Finding(Validator.CROSS_CHECK, Severity.WARNING,
                           "not checked: the exchange's symbol list is geo-blocked from "
                           f"this host (HTTP 451): {live.problem}")
        return Finding(Validator.CROSS_CHECK, Severity.ERROR,
                       f"not checked: the exchange's symbol list could not be read: "
                       f"{live.problem}")
    if day is None:
        return Finding(Validator.CROSS_CHECK, Severity.SKIPPED, "no settled date probed")
    if not live.symbols:
        return Finding(Validator.CROSS_CHECK, Severity.ERROR,
                       f"the exchange lists no live trading symbol listed by {day}")
    have = set(available_on)
    absent = sorted(live.symbols - have)
    share = 1 - len(absent) / len(live.symbols)
    details = {"date": day.isoformat(), "live": len(live.symbols), "share": round(share, 4),
               "minimum": minimum, "absent": absent[:100]}
    what = (f"{len(live.symbols) - len(absent)} of {len(live.symbols)} live trading symbols "
            f"({share:.1%}) have a file on {day}")
    if share <= minimum:  # the match must be above the minimum (issue: "> 95 %")
        return Finding(Validator.CROSS_CHECK, Severity.ERROR,
                       f"{what}, not above {minimum:.0%}; without one: "
                       f"{', '.join(absent[:10])}{' …' if len(absent) > 10 else ''}", details)
    return Finding(Validator.CROSS_CHECK, Severity.OK, what, details)


def _dates(days: Sequence[date]) -> str:
    shown = ", ".join(d.isoformat() for d in days[:3])
    return shown + (f" +{len(days) - 3}" if len(days) > 3 else "")
