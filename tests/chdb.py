"""The embedded ClickHouse engine (chdb) for tests of every package: chdb runs one engine path
per process, so one session-wide fixture hands out that path, and each ClickHouse store in a
test gets its own database on it."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chdb engine path this test process may use."""
    try:
        import chdb  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"chdb is not installed under CI: {exc}")
        pytest.skip(f"chdb is not installed: {exc}")
    return str(tmp_path_factory.mktemp("chdb"))
