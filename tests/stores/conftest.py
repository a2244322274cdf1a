"""Every store type, opened through the type table exactly as a config would open it.

PostgreSQL stores get a fresh schema in one session database; ClickHouse stores run on the
embedded chdb engine (one engine path per process, so one per test session) through
clickhouse-connect's ``chdb://`` DSN, each in a fresh database.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from candlekeep.config.store_types import STORE_TYPES
from candlekeep.core.clock import Clock, SystemClock
from candlekeep.stores.base import Store
from candlekeep.stores.registry import make_store

DATABASE_STORES = ("duckdb", "postgresql", "clickhouse")

NewStore = Callable[..., Store]


class _Env:
    """A StoreEnv for stores that need nothing from outside."""

    def __init__(self) -> None:
        self.clock: Clock = SystemClock()
        self.stores: dict[str, Store] = {}

    @property
    def state(self) -> Any:
        raise AssertionError("these stores do not use the state DB")

    def store(self, name: str) -> Store:
        return self.stores[name]


def store_config(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
                 **extra: Any) -> dict[str, Any]:
    """A config mapping for a new, empty store of ``kind``."""
    tag = secrets.token_hex(4)
    if kind == "duckdb":
        return {"type": "duckdb", "path": str(tmp_path / f"{tag}.duckdb"), **extra}
    if kind == "postgresql":
        url = request.getfixturevalue("pg_session_url")
        return {"type": "postgresql", "dsn": url, "schema": f"s_{tag}", **extra}
    if kind == "clickhouse":
        path = request.getfixturevalue("chdb_path")
        return {"type": "clickhouse", "url": f"chdb://{path}", "database": f"ck_{tag}", **extra}
    raise AssertionError(kind)


@pytest.fixture
def new_store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NewStore]:
    """``new_store(kind, **config)``: an empty store of that type, closed after the test."""
    opened: list[Store] = []

    def make(kind: str, name: str = "test", **extra: Any) -> Store:
        raw = store_config(kind, tmp_path, request, **extra)
        cfg = STORE_TYPES[kind].config.model_validate(raw)
        store = make_store(name, cfg, _Env())
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture(params=DATABASE_STORES)
def store(request: pytest.FixtureRequest, new_store: NewStore) -> Store:
    """One empty store of each database type."""
    return new_store(request.param)
