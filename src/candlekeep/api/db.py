"""The API's way into the state DB: a small pool of DB-API connections, each wrapped in the
read model's ``Reader``, so the API runs the very statements the CLI runs.

Reads run on a few threads of the pool's own, as many as it holds connections: hundreds of
concurrent requests queue for them instead of becoming hundreds of runnable threads (which
fight the event loop for the GIL) or hundreds of connections. A request whose connection
cannot be had or used gets a 503 naming the state DB, and the next request tries again.

The schema is created or upgraded when the database first answers, and again whenever a
read finds a table missing: a state DB dropped and created anew is served again once the
schema is back, not refused until a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from candlekeep.api.errors import StateDBUnavailable, db_errors, describe_db_error
from candlekeep.api.quiet import Throttled
from candlekeep.core.text import redact_url
from candlekeep.state.db import make_engine
from candlekeep.state.migrate import ensure_schema
from candlekeep.state.reader import Reader

log = logging.getLogger("candlekeep.api")
T = TypeVar("T")
THREADS = 5
"""Reader threads: as many connections as ``make_engine``'s smallest pool holds (SQLite's
five), so a thread never waits for a connection."""


class ReaderPool:
    def __init__(self, url: str) -> None:
        # Short timeouts: a request waits seconds for the database, never minutes.
        self.engine = make_engine(url, pooled=True, lock_timeout_s=5, statement_timeout_s=10,
                                  connect_timeout_s=3)
        self.url = redact_url(url)
        self.pyformat = self.engine.dialect.name == "postgresql"
        self._errors = db_errors()
        self._schema_ok = False
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="candlekeep-api-db")
        self.outage = Throttled(log)
        """Warnings about the state DB, at most one a minute of each kind."""

    def ensure_schema(self) -> bool:
        """Create or upgrade the schema once the database answers (the API may start
        before it does); False while it does not."""
        if self._schema_ok:
            return True
        try:
            ensure_schema(self.engine)
        except self._errors as exc:
            self.outage.warning("not-ready", "state DB not ready url=%s error=%s", self.url,
                                describe_db_error(exc))
            return False
        self._schema_ok = True
        return True

    async def prepare(self) -> bool:
        """``ensure_schema`` on one of the pool's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._threads,
                                                                self.ensure_schema)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader]:
        """A reader on a pooled connection; StateDBUnavailable when the database fails."""
        try:
            self.ensure_schema()
            conn = self.engine.raw_connection()
        except self._errors as exc:
            raise StateDBUnavailable(exc) from exc
        try:
            yield Reader(conn, pyformat=self.pyformat)
        except self._errors as exc:
            if _missing_table(exc):
                self._schema_ok = False  # dropped and made anew: create it again
            raise StateDBUnavailable(exc) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    async def run(self, fn: Callable[[Reader], T]) -> T:
        """``fn(reader)`` on one of the pool's threads."""
        def call() -> T:
            with self.reader() as reader:
                return fn(reader)

        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def dispose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


def _missing_table(exc: BaseException) -> bool:
    """A table the schema has is not there: SQLite's "no such table", PostgreSQL's
    undefined_table (SQLSTATE 42P01)."""
    inner = getattr(exc, "orig", None) or exc
    return getattr(inner, "sqlstate", None) == "42P01" or (
        isinstance(inner, sqlite3.Error) and "no such table" in str(inner))
