"""Alert claims on a real state DB: of nodes claiming at the same instant exactly one wins
(PostgreSQL and SQLite), and a claim released after a failed send puts the row back as it
was, so an announced alert still gets its recovery."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from candlekeep.alerts import claims
from candlekeep.state import ops_tables as o
from candlekeep.state.db import StateDB, make_engine

H = 3_600_000
T0 = 1_767_225_600_000
ROUNDS = 100
T = TypeVar("T")


@pytest.fixture(params=["postgresql", "sqlite"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one state DB, as two daemons would hold them."""
    url = (request.getfixturevalue("pg_url") if request.param == "postgresql"
           else f"sqlite:///{tmp_path / 'state.db'}")
    state = StateDB(url)  # creates the schema
    other = make_engine(url)
    yield state.engine, other
    other.dispose()
    state.dispose()


def race(engines: tuple[Engine, Engine], call: Callable[[Engine], T]) -> list[T]:
    """``call`` on both engines at once, released together by a barrier."""
    barrier = threading.Barrier(len(engines))

    def go(engine: Engine) -> T:
        barrier.wait()
        return call(engine)

    with ThreadPoolExecutor(len(engines)) as pool:
        return list(pool.map(go, engines))


def test_nodes_claiming_at_once_have_exactly_one_winner(two_nodes: tuple[Engine, Engine]
                                                         ) -> None:
    for i in range(ROUNDS):
        key = {f"job_failed:job{i}": "t"}
        first = race(two_nodes, functools.partial(claims.fire, rule="job_failed",
                                                  details=key, now_ms=T0, repeat_ms=H))
        assert sorted(len(c) for c in first) == [0, 1], f"round {i}: first message {first}"
        repeat = race(two_nodes, functools.partial(claims.fire, rule="job_failed",
                                                   details=key, now_ms=T0 + 2 * H, repeat_ms=H))
        assert sorted(len(c) for c in repeat) == [0, 1], f"round {i}: repeat {repeat}"
        recovery = race(two_nodes, functools.partial(claims.resolve, keys=key,
                                                     now_ms=T0 + 3 * H))
        assert sorted(len(r) for r in recovery) == [0, 1], f"round {i}: recovery {recovery}"
    with two_nodes[0].connect() as conn:
        sent = conn.execute(sa.select(o.alert_state.c.sent)).scalars().all()
    assert sent == [2] * ROUNDS


def row(engine: Engine, key: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(o.alert_state).where(o.alert_state.c.key == key)).first()
    return dict(found._mapping) if found is not None else None


def test_a_released_claim_puts_the_row_back(two_nodes: tuple[Engine, Engine]) -> None:
    engine = two_nodes[0]
    key = "job_failed:ingest"
    # a first message that failed: firing, never announced, so no recovery is owed
    (first,) = claims.fire(engine, "job_failed", {key: "t"}, T0, H)
    claims.release_fire(engine, [first])
    assert row(engine, key) == {"key": key, "rule": "job_failed", "state": "firing",
                                "first_at": T0, "last_sent_at": None, "sent": 0,
                                "resolved_at": None, "detail": "t"}
    assert claims.resolve(engine, [key], T0 + H) == {}

    # a new incident, announced; its repeat fails and is released: the announcement stands
    assert claims.fire(engine, "job_failed", {key: "boom"}, T0 + 2 * H, H) != []
    told = row(engine, key)
    assert told is not None and told["sent"] == 1 and told["last_sent_at"] == T0 + 2 * H
    (repeat,) = claims.fire(engine, "job_failed", {key: "boom again"}, T0 + 4 * H, H)
    claims.release_fire(engine, [repeat])
    assert row(engine, key) == told
    assert claims.fire(engine, "job_failed", {key: "boom"}, T0 + 4 * H + 1, H) != []
    assert claims.resolve(engine, [key], T0 + 5 * H) == {key: T0 + 2 * H}

    # a claim of the next incident that fails: the row is the resolved one again
    closed = row(engine, key)
    (reopened,) = claims.fire(engine, "job_failed", {key: "later"}, T0 + 6 * H, H)
    claims.release_fire(engine, [reopened])
    assert row(engine, key) == closed
