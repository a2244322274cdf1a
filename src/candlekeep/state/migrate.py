"""Bringing a state DB up to this version's schema, in place, without losing history.

Every schema change so far is additive (new tables, new nullable columns, new indexes), so
the migration is generic: create what is missing. A version row lets every later process
skip the inspection with one query. Concurrent starters are serialised: an advisory lock on
PostgreSQL, the single writer on SQLite.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from candlekeep.state import tables as t
from candlekeep.state.statuses import LIVE_STATUSES
from candlekeep.state.version import SCHEMA_VERSION

log = logging.getLogger("candlekeep.state")

_LOCK_KEY = 0x636B5F73  # "ck_s": the advisory lock that serialises migrations
LEGACY_LEASE_MS = 15_000
"""The lease the first scheduler gave every run (5 s heartbeat, three of them)."""


def _version(conn: Connection) -> int | None:
    """The stored schema version; None for a new database. Looks the table up instead of
    failing on it: a failed statement would end the transaction, and with it the lock that
    keeps concurrent starters from creating the same tables at once."""
    if not sa.inspect(conn).has_table(t.schema_version.name):
        return None
    return conn.execute(sa.select(sa.func.max(t.schema_version.c.version))).scalar()


def ensure_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        if _version(conn) == SCHEMA_VERSION:
            return
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        found = _version(conn)
        if found != SCHEMA_VERSION:
            _upgrade(conn, found)
        conn.commit()


def _upgrade(conn: Connection, found: int | None) -> None:
    t.metadata.create_all(conn)
    inspector = sa.inspect(conn)
    added: list[str] = []
    for table in t.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
            added.append(f"{table.name}.{column.name}")
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    # Live runs of the first scheduler carried only a heartbeat: give them its lease.
    runs = t.runs.c
    conn.execute(t.runs.update().where(
        runs.lease_until.is_(None), runs.status.in_(list(LIVE_STATUSES)),
        runs.heartbeat_at.is_not(None)).values(lease_until=runs.heartbeat_at + LEGACY_LEASE_MS))
    conn.execute(t.schema_version.delete())
    conn.execute(t.schema_version.insert().values(version=SCHEMA_VERSION))
    if found is not None or added:
        log.info("state DB schema upgraded from=%s to=%s added=%s", found, SCHEMA_VERSION,
                 ",".join(added) or "-")
