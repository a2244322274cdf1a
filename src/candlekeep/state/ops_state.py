"""Writing the operations tables: series state (newest candle per series and store) and
freshness verdicts. Reads go through ``state.reader`` like every listing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from candlekeep.core.series import SeriesKey
from candlekeep.state import ops_tables as o
from candlekeep.state.db import dialect_insert
from candlekeep.state.statuses import FreshnessStatus, SubjectKind


@dataclass(frozen=True, slots=True)
class SeriesMark:
    """What one upsert wrote of one series: its time range and row count."""

    series: SeriesKey
    first_ms: int
    last_ms: int
    rows: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A freshness verdict, as the check writes it."""

    kind: SubjectKind
    store: str
    subject: str
    newest_ms: int | None
    age_ms: int | None
    threshold_ms: int
    rows: int | None
    status: FreshnessStatus
    detail: str | None


def _bigger(column: sa.ColumnElement[int], value: sa.ColumnElement[int]) -> sa.Case[int]:
    return sa.case((column.is_(None), value), (value > column, value), else_=column)


def _smaller(column: sa.ColumnElement[int], value: sa.ColumnElement[int]) -> sa.Case[int]:
    return sa.case((column.is_(None), value), (value < column, value), else_=column)


_SERIES_KEY = ["store", "source", "symbol", "timeframe"]


def note_written(engine: Engine, store: str, marks: Sequence[SeriesMark], now_ms: int) -> None:
    """Widen each series' known range and add its rows, atomically against other writers
    (the newest candle never moves back because a slower writer commits later)."""
    if not marks:
        return
    c = o.series_state.c
    with engine.begin() as conn:
        stmt = dialect_insert(conn.dialect.name, o.series_state)
        ex = stmt.excluded
        conn.execute(stmt.on_conflict_do_update(
            index_elements=_SERIES_KEY,
            set_={"first_ms": _smaller(c.first_ms, ex.first_ms),
                  "last_ms": _bigger(c.last_ms, ex.last_ms),
                  "rows": c.rows + ex.rows, "updated_at": ex.updated_at}),
            [{"store": store, "source": m.series.source, "symbol": m.series.symbol,
              "timeframe": m.series.timeframe, "first_ms": m.first_ms, "last_ms": m.last_ms,
              "rows": m.rows, "updated_at": now_ms} for m in marks])


def reconcile(engine: Engine, store: str, spans: Iterable[tuple[SeriesKey, int, int, int]],
              scan_started_ms: int, now_ms: int, *, keep_newest: bool = False) -> None:
    """Set each series to what a scan of the store, begun at ``scan_started_ms``, found
    (first, last, count), and forget series the scan no longer found: a truncated or
    restored store shows as such. A series written since the scan began keeps what the
    writes recorded (the scan may not have seen them). ``keep_newest``: the newest candle
    and the series themselves are never taken back (a buffer's scan reads its first
    target, which lacks what has not been flushed yet)."""
    c = o.series_state.c
    found = list(spans)
    with engine.begin() as conn:
        if found:
            stmt = dialect_insert(conn.dialect.name, o.series_state)
            ex = stmt.excluded
            written_since = c.updated_at > scan_started_ms
            last = (_bigger(c.last_ms, ex.last_ms) if keep_newest else
                    sa.case((written_since, _bigger(c.last_ms, ex.last_ms)),
                            else_=ex.last_ms))
            conn.execute(stmt.on_conflict_do_update(
                index_elements=_SERIES_KEY,
                set_={"first_ms": sa.case((written_since, _smaller(c.first_ms, ex.first_ms)),
                                          else_=ex.first_ms),
                      "last_ms": last,
                      "rows": sa.case((written_since, _bigger(c.rows, ex.rows)),
                                      else_=ex.rows),
                      "scanned_at": ex.scanned_at}),
                [{"store": store, "source": k.source, "symbol": k.symbol,
                  "timeframe": k.timeframe, "first_ms": first, "last_ms": last_ms,
                  "rows": count, "updated_at": now_ms, "scanned_at": now_ms}
                 for k, first, last_ms, count in found])
        if keep_newest:
            return
        seen = {k for k, *_ in found}
        rows = conn.execute(sa.select(c.source, c.symbol, c.timeframe).where(
            c.store == store, c.updated_at <= scan_started_ms)).all()
        gone = [{"src": r.source, "sym": r.symbol, "tf": r.timeframe} for r in rows
                if SeriesKey(r.source, r.symbol, r.timeframe) not in seen]
        if gone:
            conn.execute(o.series_state.delete().where(
                c.store == store, c.source == sa.bindparam("src"),
                c.symbol == sa.bindparam("sym"), c.timeframe == sa.bindparam("tf"),
                c.updated_at <= scan_started_ms), gone)


def save_verdicts(engine: Engine, verdicts: Sequence[Verdict], now_ms: int) -> dict[
        tuple[str, str, str], FreshnessStatus | None]:
    """Store the verdicts; ``status_since`` moves only when a status changes (decided in
    the statement, so two checks at once neither fail nor move it twice). Returns each
    subject's status before, None when new, for the caller to see transitions."""
    f = o.freshness.c
    with engine.begin() as conn:
        rows = conn.execute(sa.select(f.kind, f.store, f.subject, f.status)).all()
        old = {(r.kind, r.store, r.subject): FreshnessStatus(r.status) for r in rows}
        if verdicts:
            stmt = dialect_insert(conn.dialect.name, o.freshness)
            ex = stmt.excluded
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["kind", "store", "subject"],
                set_={"newest_ms": ex.newest_ms, "age_ms": ex.age_ms,
                      "threshold_ms": ex.threshold_ms, "rows": ex.rows, "status": ex.status,
                      "detail": ex.detail, "checked_at": ex.checked_at,
                      "status_since": sa.case((f.status != ex.status, ex.status_since),
                                              else_=f.status_since)}),
                [{"kind": v.kind.value, "store": v.store, "subject": v.subject,
                  "newest_ms": v.newest_ms, "age_ms": v.age_ms,
                  "threshold_ms": v.threshold_ms, "rows": v.rows, "status": v.status.value,
                  "detail": v.detail, "checked_at": now_ms, "status_since": now_ms}
                 for v in verdicts])
    return {(v.kind.value, v.store, v.subject): old.get((v.kind.value, v.store, v.subject))
            for v in verdicts}


def forget_verdicts(engine: Engine, keep: Iterable[tuple[str, str, str]]) -> int:
    """Drop verdicts of subjects no longer configured (a removed series must not stay
    STALE on the dashboard forever)."""
    f = o.freshness.c
    wanted = set(keep)
    with engine.begin() as conn:
        rows = conn.execute(sa.select(f.kind, f.store, f.subject)).all()
        gone = [(r.kind, r.store, r.subject) for r in rows
                if (r.kind, r.store, r.subject) not in wanted]
        for kind, store, subject in gone:
            conn.execute(o.freshness.delete().where(
                f.kind == kind, f.store == store, f.subject == subject))
    return len(gone)
