"""Who announces an alert, across processes and nodes: one ``alert_state`` row per alert
key, changed only by conditional writes, so of two daemons sharing a state DB exactly one
sends each message.

A firing alert is claimed by an UPDATE that only matches the row as the caller read it
(and found a message due: the row was resolved, never announced, or last announced
``repeat`` ago), or by an INSERT that does nothing when the row exists; the caller whose
statement changed a row sends. Whether it did is read back with RETURNING: a row count is
no answer (psycopg reports -1 for an ``INSERT … ON CONFLICT DO NOTHING`` under
SQLAlchemy 2, which made every node the winner). A recovery is claimed the same way
(firing → resolved) and is announced only when the firing was: ``sent > 0``.

A claim whose every channel failed is released: the row is put back as the claim found it,
so the next evaluation tries again instead of waiting out ``repeat_every``, and an alert
announced before stays announced (it is owed its recovery).

Blocking (SQLAlchemy Core): the engine calls these in a thread. The snapshot read of each
call runs outside its write transaction: a SQLite transaction whose first statement is a
write waits its turn for the lock, where a read first could not upgrade later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from candlekeep.alerts.message import AlertState
from candlekeep.state import ops_tables as o
from candlekeep.state.db import dialect_insert

_A = o.alert_state.c
_FIRING = AlertState.FIRING.value
_RESOLVED = AlertState.RESOLVED.value


@dataclass(frozen=True, slots=True)
class Row:
    """An ``alert_state`` row's changing part, as a claim found it."""

    state: str
    first_at: int
    last_sent_at: int | None
    sent: int
    resolved_at: int | None
    detail: str | None

    def due(self, now_ms: int, repeat_ms: int | None) -> bool:
        if self.state == _RESOLVED or self.sent == 0 or self.last_sent_at is None:
            return True
        return repeat_ms is not None and self.last_sent_at <= now_ms - repeat_ms


_ROW = tuple(_A[f.name] for f in dataclasses.fields(Row))


@dataclass(frozen=True, slots=True)
class Claim:
    """A firing message this caller won: the key, when, and the row before (None: there
    was none), which ``release_fire`` puts back."""

    key: str
    at: int
    before: Row | None

    @property
    def sent(self) -> int:
        """The row's ``sent`` while the claim stands."""
        return (self.before.sent if self.before is not None else 0) + 1


def _won(conn: Connection, stmt: sa.Insert | sa.Update) -> bool:
    """Whether ``stmt`` changed the row it names."""
    return conn.execute(stmt.returning(_A.key)).first() is not None


def fire(engine: Engine, rule: str, details: Mapping[str, str | None], now_ms: int,
         repeat_ms: int | None) -> list[Claim]:
    """Claim the firing message of each key in ``details`` (key → a line kept with the
    row); returns the claims this caller must announce. ``repeat_ms`` None: once only."""
    keys = sorted(details)
    if not keys:
        return []
    with engine.connect() as conn:
        known = {r.key: Row(*r[1:]) for r in conn.execute(
            sa.select(_A.key, *_ROW).where(_A.key.in_(keys)))}
    due = [k for k in keys if k not in known or known[k].due(now_ms, repeat_ms)]
    if not due:
        return []
    claimed: list[Claim] = []
    with engine.begin() as conn:
        for key in due:  # sorted: two nodes claiming the same keys never deadlock
            claim = Claim(key, now_ms, known.get(key))
            before = claim.before
            stmt: sa.Insert | sa.Update
            if before is not None:  # only as we read it: another node's claim changed it
                stmt = o.alert_state.update().where(
                    _A.key == key, _A.state == before.state, _A.sent == before.sent,
                    _A.last_sent_at.is_not_distinct_from(before.last_sent_at),
                ).values(state=_FIRING, last_sent_at=now_ms, sent=claim.sent,
                         resolved_at=None, detail=details[key],
                         first_at=now_ms if before.state == _RESOLVED else before.first_at)
            else:
                stmt = dialect_insert(conn.dialect.name, o.alert_state).values(
                    key=key, rule=rule, state=_FIRING, first_at=now_ms, last_sent_at=now_ms,
                    sent=claim.sent, detail=details[key],
                ).on_conflict_do_nothing(index_elements=["key"])
            if _won(conn, stmt):
                claimed.append(claim)
    return claimed


def resolve(engine: Engine, keys: Iterable[str], now_ms: int) -> dict[str, int]:
    """Close the firing alerts among ``keys``. Returns those whose firing was announced
    (key → when it started): each needs its one recovery message. An alert never
    announced (its sending failed) closes quietly; one not firing is left alone."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with engine.connect() as conn:
        firing = list(conn.execute(sa.select(_A.key).where(
            _A.key.in_(wanted), _A.state == _FIRING)).scalars())
    announced: dict[str, int] = {}
    with engine.begin() as conn:
        for key in sorted(firing):
            closed = conn.execute(o.alert_state.update().where(
                _A.key == key, _A.state == _FIRING,
            ).values(state=_RESOLVED, resolved_at=now_ms).returning(
                _A.first_at, _A.sent)).first()
            if closed is not None and closed.sent > 0:
                announced[key] = closed.first_at
    return announced


def release_fire(engine: Engine, claimed: Sequence[Claim]) -> None:
    """Undo our firing claims (no channel delivered): each row as the claim found it (a
    new one: firing, never announced), so the next evaluation tries again."""
    with engine.begin() as conn:
        for claim in claimed:
            restore = (dataclasses.asdict(claim.before) if claim.before is not None
                       else {"last_sent_at": None, "sent": 0})
            conn.execute(o.alert_state.update().where(
                _A.key == claim.key, _A.state == _FIRING, _A.last_sent_at == claim.at,
                _A.sent == claim.sent,
            ).values(**restore))


def release_resolve(engine: Engine, keys: Sequence[str], now_ms: int) -> None:
    """Undo our recovery claims (no channel delivered): the next success announces it."""
    with engine.begin() as conn:
        conn.execute(o.alert_state.update().where(
            _A.key.in_(list(keys)), _A.state == _RESOLVED, _A.resolved_at == now_ms,
        ).values(state=_FIRING, resolved_at=None))


def firing(engine: Engine, rule: str) -> set[str]:
    """The keys of ``rule`` firing now (what a check that found all well may close)."""
    with engine.connect() as conn:
        return set(conn.execute(sa.select(_A.key).where(
            _A.rule == rule, _A.state == _FIRING)).scalars())
