"""What the PostgreSQL benchmarks share: a throw-away database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN = os.environ.get("CANDLEKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new database on the admin URL's server (``CANDLEKEEP_BENCH_PG``), dropped after."""
    name = f"ck_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield ADMIN.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
