"""The freshness check: read each store once, reconcile ``series_state``, judge every
configured series and watched dataset, and record the verdicts in the state DB, where the
API, the dashboard, alerts and reports read them.

Blocking (stores and the state DB): the ``freshness`` job runs it in a thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from candlekeep.config.store_types import BufferStoreConfig
from candlekeep.core.series import SeriesKey
from candlekeep.core.text import clean_text
from candlekeep.freshness.rules import Assessment, FreshnessRules, Threshold, assess
from candlekeep.jobs.runtime import Runtime
from candlekeep.state import ops_tables as o
from candlekeep.state.ops_state import Verdict, forget_verdicts, reconcile, save_verdicts
from candlekeep.state.statuses import FreshnessStatus, SubjectKind
from candlekeep.stores.base import DatasetStats

log = logging.getLogger("candlekeep.freshness")

@dataclass(frozen=True, slots=True)
class Transition:
    kind: SubjectKind
    store: str
    subject: str
    before: FreshnessStatus | None
    after: FreshnessStatus


@dataclass
class CheckResult:
    verdicts: list[Verdict] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    store_errors: dict[str, str] = field(default_factory=dict)

    def count(self, status: FreshnessStatus) -> int:
        return sum(1 for v in self.verdicts if v.status == status)


def refresh_series_state(runtime: Runtime, now_ms: int,
                         stores: set[str] | None = None) -> dict[str, str]:
    """Reconcile ``series_state`` with one span scan per store that holds configured
    series (or ``stores``); returns the stores that could not be read, with the error."""
    wanted = stores if stores is not None else {p.store for p in runtime.plans()}
    errors: dict[str, str] = {}
    for name in sorted(wanted):
        started = runtime.clock.now_ms()
        try:
            spans = runtime.store(name).spans()
        except Exception as exc:
            errors[name] = clean_text(f"{type(exc).__name__}: {exc}", 500) or ""
            log.warning("freshness: store unreadable store=%s error=%s", name, errors[name])
            continue
        buffered = isinstance(runtime.config.stores.get(name), BufferStoreConfig)
        reconcile(runtime.state.engine, name,
                  [(s.series, s.first_ms, s.last_ms, s.count) for s in spans], started,
                  max(now_ms, runtime.clock.now_ms()), keep_newest=buffered)
    return errors


def run_check(runtime: Runtime, now_ms: int) -> CheckResult:
    """Judge everything configured; verdicts of subjects no longer configured are dropped."""
    rules = FreshnessRules(runtime.config.freshness)
    plans = [p for p in runtime.plans() if p.end_ms is None]  # a closed range never ages
    result = CheckResult()
    result.store_errors = refresh_series_state(runtime, now_ms, {p.store for p in plans})
    newest = _newest(runtime, {p.store for p in plans})
    for p in plans:
        threshold = rules.series(p.key)
        error = result.store_errors.get(p.store)
        last, rows = newest.get((p.store, p.key), (None, None))
        verdict = (Assessment(FreshnessStatus.ERROR, None, f"store {p.store!r}: {error}")
                   if error else assess(last, threshold, now_ms))
        result.verdicts.append(_verdict(SubjectKind.SERIES, p.store, str(p.key), last, rows,
                                        threshold, verdict))
    result.verdicts += _datasets(runtime, rules, now_ms)
    engine = runtime.state.engine
    before = save_verdicts(engine, result.verdicts, now_ms)
    forget_verdicts(engine, [(v.kind, v.store, v.subject) for v in result.verdicts])
    for v in result.verdicts:
        old = before.get((v.kind.value, v.store, v.subject))
        if old != v.status:
            result.transitions.append(Transition(v.kind, v.store, v.subject, old, v.status))
    return result


def _newest(runtime: Runtime, stores: set[str]) -> dict[tuple[str, SeriesKey],
                                                      tuple[int | None, int | None]]:
    s = o.series_state.c
    with runtime.state.engine.connect() as conn:
        rows = conn.execute(sa.select(s.store, s.source, s.symbol, s.timeframe, s.last_ms,
                                      s.rows).where(s.store.in_(sorted(stores)))).all()
    return {(r.store, SeriesKey(r.source, r.symbol, r.timeframe)): (r.last_ms, r.rows)
            for r in rows}


def _datasets(runtime: Runtime, rules: FreshnessRules, now_ms: int) -> list[Verdict]:
    watched = runtime.config.freshness.datasets
    stats: dict[str, dict[str, DatasetStats] | str] = {}
    for name in {d.store for d in watched}:
        tables = sorted({d.dataset for d in watched if d.store == name})
        try:
            stats[name] = {st.name: st for st in runtime.store(name).stats(tables)}
        except Exception as exc:
            stats[name] = clean_text(f"{type(exc).__name__}: {exc}", 500) or ""
    out = []
    for d in watched:
        threshold = rules.dataset(d.store, d.dataset)
        assert threshold is not None  # it is configured: that is where it came from
        found = stats[d.store]
        if isinstance(found, str):
            verdict = Assessment(FreshnessStatus.ERROR, None, f"store {d.store!r}: {found}")
            out.append(_verdict(SubjectKind.DATASET, d.store, d.dataset, None, None, threshold,
                                verdict))
            continue
        st = found.get(d.dataset)
        if st is None:
            verdict = Assessment(FreshnessStatus.MISSING, None, "no such table in the store")
        elif st.newest_ms is None:
            verdict = Assessment(FreshnessStatus.MISSING, None, "the table is empty")
        else:
            verdict = assess(st.newest_ms, threshold, now_ms)
        out.append(_verdict(SubjectKind.DATASET, d.store, d.dataset,
                            st.newest_ms if st else None,
                            st.rows if st else None, threshold, verdict))
    return out


def _verdict(kind: SubjectKind, store: str, subject: str, newest: int | None, rows: int | None,
             threshold: Threshold, a: Assessment) -> Verdict:
    return Verdict(kind, store, subject, newest, a.age_ms, threshold.max_age_ms, rows,
                   a.status, a.detail)
