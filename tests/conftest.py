"""Suite-wide fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.chdb import chdb_path  # noqa: F401 - the one chdb engine path
from tests.pg import pg_session_url, pg_url  # noqa: F401 - fixtures for every package
from tests.scheduler.procs import Daemon


@pytest.fixture(autouse=True)
def _restore_candlekeep_logger() -> Iterator[None]:
    """In-process CLI tests configure the ``candlekeep`` logger; later tests must not inherit
    their handlers or level."""
    logger = logging.getLogger("candlekeep")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemon processes a test starts; whatever is still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()
