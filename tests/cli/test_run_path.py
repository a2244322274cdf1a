"""Data commands go through the scheduler's run path: they hold their job's slot with a
lease they keep alive, so a daemon sharing the state DB (and even the node name) never
takes a long CLI backfill for a dead one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from candlekeep.sim.exchange import Faults
from candlekeep.state.db import StateDB
from tests.cli.conftest import DAY, Sim, write_config
from tests.scheduler.procs import Daemon, runs, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sim", [{"faults": Faults(slow_rate=1.0, slow_s=1.5)}],
                         indirect=True)
def test_a_long_cli_backfill_is_heartbeated_not_abandoned_by_a_daemon(
        tmp_path: Path, sim: Sim, daemons: list[Daemon]) -> None:
    start = (time.time_ns() // 1_000_000) // DAY * DAY - 20 * DAY
    cfg = write_config(tmp_path, sim.url, start_ms=start, symbols=["BTC/USDT"],
                       timeframes=["1m"])
    raw = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**raw, "node": "shared", "jobs": []}))
    env = {k: v for k, v in os.environ.items() if k != "CANDLEKEEP_CONFIG"}
    backfill = subprocess.Popen([sys.executable, "-m", "candlekeep", "--config", str(cfg),
                                 "backfill", "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        (tmp_path / "data").mkdir(exist_ok=True)
        state = StateDB(f"sqlite:///{tmp_path / 'data' / 'state.db'}")
        (row,) = wait_for("the backfill's running row", lambda: [
            r for r in runs(state) if r.job == "backfill" and r.status == "running"])
        daemon = Daemon(cfg)  # same node name, heartbeat 1 s: a 3 s lease
        daemons.append(daemon)
        _out, err = backfill.communicate(timeout=120)
    finally:
        if backfill.poll() is None:
            backfill.kill()
    assert backfill.returncode == 0, err
    (done,) = [r for r in runs(state) if r.id == row.id]
    # 20 days of 1m candles, less the holes the sim scripts on the exchange side
    assert done.status == "success" and done.rows_written > 0.9 * 20 * 1440
    assert "abandoned" not in daemon.log()
    with state.engine.connect() as conn:
        import sqlalchemy as sa

        from candlekeep.state import tables as t

        beat = conn.execute(sa.select(t.runs.c.heartbeat_at).where(
            t.runs.c.id == row.id)).scalar_one()
    assert done.started_at is not None and beat > done.started_at  # kept alive meanwhile
