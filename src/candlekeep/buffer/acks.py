"""Which target has which buffer file: the ``buffer_acks`` table of the state DB.

A row is written after the target's upsert of that file has committed, so a flush killed in
between writes the file there again (an idempotent upsert) and never skips it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sqlalchemy as sa

from candlekeep.buffer.files import BufferFile
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB

_CHUNK = 500  # bound parameters per statement stay far below SQLite's limit

Acks = dict[str, set[str]]
"""File name → the targets that have it."""


def acked(state: StateDB, buffer: str) -> Acks:
    c = t.buffer_acks.c
    out: Acks = {}
    with state.engine.connect() as conn:
        for file, target in conn.execute(
                sa.select(c.file, c.target).where(c.buffer == buffer)):
            out.setdefault(file, set()).add(target)
    return out


def record(state: StateDB, buffer: str, target: str, files: Sequence[BufferFile],
           now_ms: int) -> None:
    """``target`` has ``files`` (idempotent: a row already there is replaced)."""
    c = t.buffer_acks.c
    with state.engine.begin() as conn:
        for part in _chunks([f.name for f in files]):
            conn.execute(t.buffer_acks.delete().where(
                c.buffer == buffer, c.target == target, c.file.in_(part)))
        conn.execute(t.buffer_acks.insert(), [
            {"buffer": buffer, "file": f.name, "target": target, "rows": f.rows,
             "acked_at": now_ms} for f in files])


def forget(state: StateDB, buffer: str, files: Collection[str]) -> None:
    """Drop the rows of files that are gone (deleted after every target had them)."""
    c = t.buffer_acks.c
    with state.engine.begin() as conn:
        for part in _chunks(list(files)):
            conn.execute(t.buffer_acks.delete().where(c.buffer == buffer, c.file.in_(part)))


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
