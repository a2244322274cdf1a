"""Who announces an alert, across processes and nodes: one ``alert_state`` row per alert
key, changed only by conditional writes, so of two daemons sharing a state DB exactly one
sends each message.

A firing alert is claimed by an UPDATE that only matches while a message is due (the row
was resolved, never announced, or last announced ``repeat`` ago), or by an INSERT that does
nothing when the row exists; the caller whose statement changed a row sends. A recovery is
claimed the same way (firing → resolved) and is announced only when the firing was. A claim
whose every channel failed is released, so the next evaluation tries again instead of
waiting out ``repeat_every``.

Blocking (SQLAlchemy Core): the engine calls these in a thread. The snapshot read of each
call runs outside its write transaction: a SQLite transaction whose first statement is a
write waits its turn for the lock, where a read first could not upgrade later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from candlekeep.alerts.message import AlertState
from candlekeep.state import ops_tables as o
from candlekeep.state.db import dialect_insert

_A = o.alert_state.c
_FIRING = AlertState.FIRING.value
_RESOLVED = AlertState.RESOLVED.value


def _due(row: Any, now_ms: int, repeat_ms: int | None) -> bool:
    if row.state == _RESOLVED or row.last_sent_at is None:
        return True
    return repeat_ms is not None and row.last_sent_at <= now_ms - repeat_ms


def fire(engine: Engine, rule: str, details: Mapping[str, str | None], now_ms: int,
         repeat_ms: int | None) -> list[str]:
    """Claim the firing message of each key in ``details`` (key → a line kept with the
    row); returns the keys this caller must announce. ``repeat_ms`` None: once only."""
    keys = sorted(details)
    if not keys:
        return []
    with engine.connect() as conn:
        known = {r.key: r for r in conn.execute(
            sa.select(_A.key, _A.state, _A.last_sent_at).where(_A.key.in_(keys)))}
    due = [k for k in keys if k not in known or _due(known[k], now_ms, repeat_ms)]
    if not due:
        return []
    claimed: list[str] = []
    with engine.begin() as conn:
        for key in due:  # sorted: two nodes claiming the same keys never deadlock
            if key in known:
                cond = [_A.state == _RESOLVED, _A.last_sent_at.is_(None)]
                if repeat_ms is not None:
                    cond.append(_A.last_sent_at <= now_ms - repeat_ms)
                stmt = o.alert_state.update().where(_A.key == key, sa.or_(*cond)).values(
                    state=_FIRING, last_sent_at=now_ms, sent=_A.sent + 1, resolved_at=None,
                    first_at=sa.case((_A.state == _RESOLVED, now_ms), else_=_A.first_at),
                    detail=details[key])
            else:
                stmt = dialect_insert(conn.dialect.name, o.alert_state).values(
                    key=key, rule=rule, state=_FIRING, first_at=now_ms, last_sent_at=now_ms,
                    sent=1, detail=details[key]).on_conflict_do_nothing(index_elements=["key"])
            if conn.execute(stmt).rowcount:
                claimed.append(key)
    return claimed


def resolve(engine: Engine, keys: Iterable[str], now_ms: int) -> dict[str, int]:
    """Close the firing alerts among ``keys``. Returns those whose firing was announced
    (key → when it started): each needs its one recovery message. An alert never
    announced (its sending failed) closes quietly; one not firing is left alone."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with engine.connect() as conn:
        firing = {r.key: r.first_at for r in conn.execute(
            sa.select(_A.key, _A.first_at).where(_A.key.in_(wanted), _A.state == _FIRING))}
    announced: dict[str, int] = {}
    with engine.begin() as conn:
        for key in sorted(firing):
            closed = conn.execute(o.alert_state.update().where(
                _A.key == key, _A.state == _FIRING, _A.last_sent_at.is_not(None),
            ).values(state=_RESOLVED, resolved_at=now_ms)).rowcount
            if closed:
                announced[key] = firing[key]
                continue
            conn.execute(o.alert_state.update().where(_A.key == key, _A.state == _FIRING)
                         .values(state=_RESOLVED, resolved_at=now_ms))
    return announced


def release_fire(engine: Engine, keys: Sequence[str], now_ms: int) -> None:
    """Undo our firing claims (no channel delivered): due again at the next evaluation."""
    with engine.begin() as conn:
        conn.execute(o.alert_state.update().where(
            _A.key.in_(list(keys)), _A.state == _FIRING, _A.last_sent_at == now_ms,
        ).values(last_sent_at=None, sent=_A.sent - 1))


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
