"""A few PostgreSQL connections shared by the threads that call one store.

Jobs call stores from worker threads, and several series are written at once: one connection
behind a lock would queue them all behind the slowest upsert (four threads upserting their
own series, bench/pg_upsert.py: 8.2 s through one connection, 6.9 s through four, on two
cores). A connection is opened when no idle one is free (up to ``size``), handed to one
thread at a time, and checked with a round trip before reuse when it has sat idle long enough
for a server restart or a dropped network to have killed it. A connection that comes back
broken or inside a transaction is closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import pq

Connection = psycopg.Connection[Any]

_CHECK_AFTER_S = 30.0


class PoolTimeout(Exception):
    """Every connection stayed busy for the whole wait."""


class Pool:
    def __init__(self, connect: Callable[[], Connection], size: int, wait_s: float) -> None:
        self._connect = connect
        self._size = size
        self._wait_s = wait_s
        self._idle: list[tuple[Connection, float]] = []
        self._open = 0
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self._get()
        try:
            yield conn
        finally:
            self._put(conn)

    def _get(self) -> Connection:
        deadline = time.monotonic() + self._wait_s
        while True:
            with self._cond:
                while not self._idle and self._open >= self._size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolTimeout(f"all {self._size} connections stayed busy for "
                                          f"{self._wait_s:g}s")
                    self._cond.wait(remaining)
                if self._idle:
                    conn, idle_since = self._idle.pop()
                else:
                    self._open += 1
                    conn, idle_since = None, 0.0
            if conn is None:
                return self._new()
            if time.monotonic() - idle_since < _CHECK_AFTER_S or _alive(conn):
                return conn
            self._discard(conn)

    def _new(self) -> Connection:
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _put(self, conn: Connection) -> None:
        if conn.broken or conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            self._discard(conn)
            return
        with self._cond:
            self._idle.append((conn, time.monotonic()))
            self._cond.notify()

    def _discard(self, conn: Connection) -> None:
        with suppress(psycopg.Error):
            conn.close()
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        """Close the idle connections (the pool stays usable: a later call opens new ones)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn, _ in idle:
            with suppress(psycopg.Error):
                conn.close()


def _alive(conn: Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
