"""Suite-wide fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_candlekeep_logger() -> Iterator[None]:
    """In-process CLI tests configure the ``candlekeep`` logger; later tests must not inherit
    their handlers or level."""
    logger = logging.getLogger("candlekeep")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
