"""Throw-away PostgreSQL databases and schemas for tests (CI=true: unreachable is a failure)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

PG_ADMIN = os.environ.get("CANDLEKEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN} is unreachable under CI: {exc}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN} is unreachable: {exc}")


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new, empty database; dropped afterwards (with any session still on it)."""
    admin = _admin()
    name = f"ck_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throw-away database for one test."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """One throw-away database for the whole session: tests isolate by schema in it."""
    with throwaway_database() as url:
        yield url
