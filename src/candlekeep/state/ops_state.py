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


@dataclass(frozen=True, slots=True)
class SeriesMark:
    """What one upsert wrote of one series: its time range and row count."""

    series: SeriesKey
    first_ms: int
    last_ms: int
    rows: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A freshness verdict, as stored (``status`` is a ``FreshnessStatus`` value)."""

    kind: str
    store: str
    subject: str
    newest_ms: int | None
    age_ms: int | None
    threshold_ms: int
    rows: int | None
    status: str
    detail: str | None


def _bigger(column: sa.ColumnElement[int], value: sa.ColumnElement[int]) -> sa.Case[int]:
    return sa.case((column.is_(None), value), (value > column, value), else_=column)


def _smaller(column: sa.ColumnElement[int], value: sa.ColumnElement[int]) -> sa.Case[int]:
    return sa.case((column.is_(None), value), (value < column, value), else_=column)


def note_written(engine: Engine, store: str, marks: Sequence[SeriesMark], now_ms: int) -> None:
    """Widen each series' known range and add its rows, atomically against other writers
    (the newest candle never moves back because a slower writer commits later)."""
    if not marks:
        return
    with engine.begin() as conn:
        for m in marks:
            stmt = dialect_insert(conn.dialect.name, o.series_state).values(
                store=store, source=m.series.source, symbol=m.series.symbol,
                timeframe=m.series.timeframe, first_ms=m.first_ms, last_ms=m.last_ms,
                rows=m.rows, updated_at=now_ms)
            ex = stmt.excluded
            c = o.series_state.c
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["store", "source", "symbol", "timeframe"],
                set_={"first_ms": _smaller(c.first_ms, ex.first_ms),
                      "last_ms": _bigger(c.last_ms, ex.last_ms),
                      "rows": c.rows + ex.rows, "updated_at": ex.updated_at}))


def reconcile(engine: Engine, store: str, spans: Iterable[tuple[SeriesKey, int, int, int]],
              now_ms: int) -> None:
    """Set each series to what a scan of the store found (first, last, count). The newest
    candle only moves forward: a buffer's scan reads its first target, which may not have
    the newest, still unflushed, candles yet."""
    with engine.begin() as conn:
        for series, first_ms, last_ms, count in spans:
            stmt = dialect_insert(conn.dialect.name, o.series_state).values(
                store=store, source=series.source, symbol=series.symbol,
                timeframe=series.timeframe, first_ms=first_ms, last_ms=last_ms, rows=count,
                updated_at=now_ms, scanned_at=now_ms)
            ex = stmt.excluded
            c = o.series_state.c
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["store", "source", "symbol", "timeframe"],
                set_={"first_ms": ex.first_ms, "last_ms": _bigger(c.last_ms, ex.last_ms),
                      "rows": ex.rows, "scanned_at": ex.scanned_at}))


def save_verdicts(engine: Engine, verdicts: Sequence[Verdict], now_ms: int) -> dict[
        tuple[str, str, str], str | None]:
    """Store the verdicts; ``status_since`` moves only when a status changes. Returns each
    subject's previous status (None when new), for the caller to see transitions."""
    f = o.freshness.c
    previous: dict[tuple[str, str, str], str | None] = {}
    with engine.begin() as conn:
        rows = conn.execute(sa.select(f.kind, f.store, f.subject, f.status)).all()
        old = {(r.kind, r.store, r.subject): r.status for r in rows}
        for v in verdicts:
            key = (v.kind, v.store, v.subject)
            before = old.get(key)
            previous[key] = before
            values = {"newest_ms": v.newest_ms, "age_ms": v.age_ms,
                      "threshold_ms": v.threshold_ms, "rows": v.rows, "status": v.status,
                      "detail": v.detail, "checked_at": now_ms}
            if before is None:
                conn.execute(o.freshness.insert().values(
                    kind=v.kind, store=v.store, subject=v.subject, status_since=now_ms,
                    **values))
                continue
            if before != v.status:
                values["status_since"] = now_ms
            conn.execute(o.freshness.update().where(
                f.kind == v.kind, f.store == v.store, f.subject == v.subject).values(**values))
    return previous


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
