"""The daemon's log file failing (disk full) must not reach the engine's loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from candlekeep.scheduler.daemon import SafeRotatingFileHandler
from tests.scheduler.helpers import SettlingClock, engine, ms, running, runtime, spec

FULL = Path("/dev/full")


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
async def test_disk_full_log_file_does_not_stop_the_loop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = SafeRotatingFileHandler(str(FULL), maxBytes=0)
    handler.setLevel(logging.INFO)
    root = logging.getLogger("candlekeep")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        clock = SettlingClock(ms("2025-01-01T00:00:00"))
        eng = engine(runtime(tmp_path, clock), [spec("j", "* * * * *")])
        async with running(eng):
            await clock.run_until(ms("2025-01-01T00:10:00"))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    rows = eng.runtime.state.list_runs(limit=None)
    assert len(rows) == 10 and {r.status for r in rows} == {"success"}
    err = capsys.readouterr().err
    assert err.count("cannot write log file /dev/full") == 1  # reported, rate-limited
