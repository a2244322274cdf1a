"""Which target has which buffer file: the ``buffer_acks`` table of the state DB.

A row is written after the target's upsert of that file has committed, so a flush killed in
between writes the file there again (an idempotent upsert) and never skips it.

``buffer`` is the buffer's ack key (``BufferStore.ack_key``: store name and folder id), not
its name alone. A state DB that fails is a StoreError naming it (password hidden), so that
the flush job fails this buffer and goes on to the next.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa

from candlekeep.buffer.files import BufferFile
from candlekeep.core.errors import StoreError
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB

_CHUNK = 500  # bound parameters per statement stay far below SQLite's limit

Acks = dict[str, set[str]]
"""File name → the targets that have it."""


def acked(state: StateDB, buffer: str) -> Acks:
    c = t.buffer_acks.c
    out: Acks = {}
    with _state_errors(state, buffer, "read the acknowledgements"), \
            state.engine.connect() as conn:
        for file, target in conn.execute(
                sa.select(c.file, c.target).where(c.buffer == buffer)):
            out.setdefault(file, set()).add(target)
    return out


def record(state: StateDB, buffer: str, target: str, files: Sequence[BufferFile],
           now_ms: int) -> None:
    """``target`` has ``files`` (idempotent: a row already there is replaced)."""
    c = t.buffer_acks.c
    with _state_errors(state, buffer, f"record that {target} has {len(files)} file(s)"), \
            state.engine.begin() as conn:
        for part in _chunks([f.name for f in files]):
            conn.execute(t.buffer_acks.delete().where(
                c.buffer == buffer, c.target == target, c.file.in_(part)))
        conn.execute(t.buffer_acks.insert(), [
            {"buffer": buffer, "file": f.name, "target": target, "rows": f.rows,
             "acked_at": now_ms} for f in files])


def forget(state: StateDB, buffer: str, files: Collection[str]) -> None:
    """Drop the rows of files that are gone (deleted after every target had them)."""
    c = t.buffer_acks.c
    with _state_errors(state, buffer, "drop the acknowledgements of deleted files"), \
            state.engine.begin() as conn:
        for part in _chunks(list(files)):
            conn.execute(t.buffer_acks.delete().where(c.buffer == buffer, c.file.in_(part)))


@contextmanager
def _state_errors(state: StateDB, buffer: str, action: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        url = state.engine.url.render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        text = str(cause).strip()
        if state.engine.url.password:
            text = text.replace(str(state.engine.url.password), "***")
        raise StoreError(
            f"buffer {buffer}: state DB {url}: cannot {action}: {type(cause).__name__}: "
            f"{text} (check that the state DB is reachable and at the current "
            "schema; the buffer's files stay pending and the next flush tries again)"
        ) from None


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
