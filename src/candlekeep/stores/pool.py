"""A few database connections (or clients) shared by the threads that call one store.

Jobs call stores from worker threads, and several series are written at once: one connection
behind a lock would queue them all behind the slowest upsert (four threads upserting their
own series, bench/pg_upsert.py: 8.2 s through one PostgreSQL connection, 6.9 s through four,
on two cores), and a ClickHouse client may not run two queries at once at all. A connection
is opened when no idle one is free (up to ``size``), handed to one thread at a time, checked
before reuse when it has sat idle long enough for a server restart or a dropped network to
have killed it, and closed instead of reused when it comes back unusable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

C = TypeVar("C")


class PoolTimeout(Exception):
    """Every connection stayed busy for the whole wait."""


class Pool(Generic[C]):
    """``open`` makes a connection, ``close`` ends one; ``reusable`` says whether one that
    came back may be handed out again, ``alive`` whether one idle for ``check_after_s`` still
    works (a round trip). ``wait_s``: how long a caller waits for a busy pool (None: no limit).
    """

    def __init__(self, open: Callable[[], C], close: Callable[[C], None], *, size: int,
                 wait_s: float | None = None,
                 reusable: Callable[[C], bool] = lambda c: True,
                 alive: Callable[[C], bool] = lambda c: True,
                 check_after_s: float = 30.0) -> None:
        self._open_one = open
        self._close_one = close
        self._size = size
        self._wait_s = wait_s
        self._reusable = reusable
        self._alive = alive
        self._check_after_s = check_after_s
        self._idle: list[tuple[C, float]] = []
        self._open = 0
        self._closes = 0  # close() calls so far: a connection handed out before one is ended
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[C]:
        conn, closes = self._get()
        try:
            yield conn
        finally:
            self._put(conn, closes)

    def _get(self) -> tuple[C, int]:
        deadline = None if self._wait_s is None else time.monotonic() + self._wait_s
        while True:
            with self._cond:
                while not self._idle and self._open >= self._size:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise PoolTimeout(f"all {self._size} connections stayed busy for "
                                          f"{self._wait_s:g}s")
                    self._cond.wait(remaining)
                closes = self._closes
                if not self._idle:
                    self._open += 1
                    break
                conn, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < self._check_after_s or self._alive(conn):
                return conn, closes
            self._discard(conn)
        try:
            return self._open_one(), closes
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _put(self, conn: C, closes: int) -> None:
        if self._reusable(conn):
            with self._cond:
                if closes == self._closes:
                    self._idle.append((conn, time.monotonic()))
                    self._cond.notify()
                    return
        self._discard(conn)

    def _discard(self, conn: C) -> None:
        with suppress(Exception):
            self._close_one(conn)
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        """Close the idle connections, and those in use when they come back (the pool stays
        usable: a later call opens new ones)."""
        with self._cond:
            self._closes += 1
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn, _ in idle:
            with suppress(Exception):
                self._close_one(conn)
