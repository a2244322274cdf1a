"""Outage warnings: the first of a kind at once, then one a minute saying how many were
held back; other kinds are not held back by it."""

from __future__ import annotations

import logging

import pytest

from candlekeep.api.quiet import Throttled


def test_a_repeated_warning_is_written_once_a_minute_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    quiet = Throttled(logging.getLogger("candlekeep.api"), every_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="candlekeep.api"):
        for _ in range(100):
            quiet.warning("down", "state DB unavailable error=%s", "refused")
        quiet.warning("other", "metrics: state DB unreadable")
        now[0] = 59.9
        quiet.warning("down", "state DB unavailable error=%s", "refused")
        now[0] = 60.0
        quiet.warning("down", "state DB unavailable error=%s", "timeout")
    assert [r.getMessage() for r in caplog.records] == [
        "state DB unavailable error=refused",
        "metrics: state DB unreadable",
        "state DB unavailable error=timeout held_back=100",
    ]
