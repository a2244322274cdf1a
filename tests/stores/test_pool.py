"""The connection pool both server stores share: bounded, reusing, discarding the broken."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from candlekeep.stores.pool import Pool, PoolTimeout


@dataclass
class Conn:
    no: int
    broken: bool = False
    closed: bool = False


@dataclass
class Opener:
    made: list[Conn] = field(default_factory=list)

    def open(self) -> Conn:
        self.made.append(Conn(len(self.made)))
        return self.made[-1]


def close(c: Conn) -> None:
    c.closed = True


def test_at_most_size_connections_and_idle_ones_are_reused() -> None:
    opener = Opener()
    pool: Pool[Conn] = Pool(opener.open, close, size=2, wait_s=0.01)
    inside, release = threading.Barrier(3), threading.Event()
    seen: list[int] = []

    def work() -> None:
        with pool.connection() as c:
            seen.append(c.no)
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()  # both hold a connection now
    with pytest.raises(PoolTimeout, match="all 2 connections stayed busy"), pool.connection():
        pass
    release.set()
    for t in threads:
        t.join()
    with pool.connection() as c:
        assert c.no in seen
    assert sorted(seen) == [0, 1] and len(opener.made) == 2


def test_broken_and_dead_connections_are_closed_not_reused() -> None:
    opener = Opener()
    pool: Pool[Conn] = Pool(opener.open, close, size=1, reusable=lambda c: not c.broken,
                            alive=lambda c: c.no != 1, check_after_s=0.0)
    with pool.connection() as c:
        c.broken = True
    assert opener.made[0].closed
    with pool.connection() as c:
        assert c.no == 1  # a new one
    with pool.connection() as c:  # idle past check_after_s and not alive: replaced
        assert c.no == 2
    assert opener.made[1].closed
    pool.close()
    assert opener.made[2].closed


def test_a_failed_open_frees_its_place() -> None:
    calls = 0

    def flaky() -> Conn:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("refused")
        return Conn(calls)

    pool: Pool[Conn] = Pool(flaky, close, size=1, wait_s=0.01)
    with pytest.raises(OSError), pool.connection():
        pass
    with pool.connection() as c:
        assert c.no == 2


def test_a_connection_busy_during_close_is_closed_when_it_comes_back() -> None:
    """close() ends what it can reach; one in use then is ended on its return instead of
    idling on (a chdb client that stayed pooled kept the engine open). The pool stays
    usable."""
    opener = Opener()
    pool: Pool[Conn] = Pool(opener.open, close, size=2)
    with pool.connection() as busy:
        with pool.connection():
            pass  # the second one goes back idle
        pool.close()
        assert opener.made[1].closed and not busy.closed
    assert busy.closed
    with pool.connection() as c:
        assert c.no == 2 and not c.closed
    with pool.connection() as again:
        assert again is c  # connections opened after close() are pooled as before
