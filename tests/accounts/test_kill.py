"""kill -9 of a real ``candlekeep run`` in the middle of an account pull, then a rerun: the
tables end up identical to an uninterrupted run's and to the sim's truth.

The sim is served from this process with its clock stopped, so the killed run, its rerun
and the uninterrupted run (from a folder of its own, afterwards) all see the same history.
Alice's funding pages are slowed so the kill lands between two of them: after her first
durable funding page (its cursor is in the state DB) and before the last.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml

from candlekeep.core.clock import FakeClock
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.server import run_in_thread
from tests.accounts.conftest import (
    ALICE,
    BOB,
    FILL_COLUMNS,
    FUNDING_COLUMNS,
    LEDGER_COLUMNS,
    NOW,
    START,
    default_spec,
    fill_truth,
    funding_truth,
    ledger_truth,
    rows,
)
from tests.waiting import until

pytestmark = pytest.mark.slow

TABLES = {"fills": ("address", "tid"), "funding_payments": ("address", "time", "coin"),
          "ledger_updates": ("address", "time", "hash", "kind"), "orders": ("address", "oid")}


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[HyperliquidSim, str]]:
    ex = SimExchange(7, clock=FakeClock(NOW), holes=None, transient=None)
    hl = HyperliquidSim(ex, default_spec())
    with run_in_thread(ex, hyperliquid=hl) as url:
        yield hl, url


def write_config(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True)
    cfg = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/accounts.duckdb"}},
        "sources": {"hl": {"type": "hyperliquid", "base_url": url, "max_attempts": 3,
                           "weight_per_minute": 10**9}},
        "accounts": [{"name": "alice", "address": ALICE, "source": "hl"},
                     {"name": "bob", "address": BOB, "source": "hl"}],
        "jobs": [{"name": "accounts", "type": "hyperliquid_accounts",
                  "params": {"since": START, "concurrency": 1,
                             "datasets": ["orders", "fills", "funding", "ledger"]}}],
    }
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "candlekeep", "--config", str(config), "run", "accounts",
            "--json"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CANDLEKEEP_CONFIG"}


def finished(config: Path) -> dict[str, Any]:
    proc = subprocess.run(run_cmd(config), capture_output=True, text=True, env=env(),
                          timeout=60)
    assert proc.returncode == 0, f"run exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    res: dict[str, Any] = json.loads(proc.stdout)
    return res


def funding_cursor(config: Path) -> int | None:
    state = config.parent / "data" / "state.db"
    if not state.exists():
        return None
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as con:
            row = con.execute("SELECT position FROM checkpoints WHERE job = "
                              "'hyperliquid_accounts' AND symbol = ? AND timeframe = 'funding'",
                              (f"{ALICE}@main",)).fetchone()
    except sqlite3.OperationalError:  # not created yet, or busy for a moment
        return None
    return None if row is None else int(row[0])


def table(config: Path, name: str) -> pa.Table:
    """A whole table but ingested_at, in key order."""
    db = config.parent / "data" / "accounts.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()
                if r[0] != "ingested_at"]
        return con.sql(f"SELECT {', '.join(cols)} FROM {name} "
                       f"ORDER BY {', '.join(TABLES[name])}").to_arrow_table()


async def test_kill_9_mid_pull_then_rerun_equals_an_uninterrupted_run(
        tmp_path: Path, sim: tuple[HyperliquidSim, str]) -> None:
    hl, url = sim
    truth = hl.funding(ALICE, START)
    assert len(truth) > 2 * 500, "alice's funding takes three pages or more"
    killed = write_config(tmp_path / "killed", url)
    hl.force("slow", 10, info_type="userFunding", delay_s=0.4)
    log = tmp_path / "killed.log"
    try:
        with log.open("wb") as sink:
            proc = subprocess.Popen(run_cmd(killed), stdout=sink, stderr=subprocess.STDOUT,
                                    env=env())
        try:
            def durable_page() -> int | None:
                assert proc.poll() is None, f"the run ended before the kill:\n{log.read_text()}"
                return funding_cursor(killed)

            position = await until(durable_page, "alice's first durable funding page", 30)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    finally:
        hl.clear_forced()
    assert proc.returncode == -signal.SIGKILL
    assert truth[0].time < position <= truth[-1].time, "killed mid-pull"
    with duckdb.connect(str(killed.parent / "data" / "accounts.duckdb"), read_only=True) as con:
        partial = con.execute("SELECT count(*) FROM funding_payments WHERE address = ?",
                              [ALICE]).fetchone()
    assert partial is not None and 0 < partial[0] < len(truth)

    resumed = finished(killed)
    clean_dir = write_config(tmp_path / "clean", url)
    clean = finished(clean_dir)
    assert resumed["status"] == clean["status"] == "success"
    assert resumed["rows_written"] < clean["rows_written"], "the rerun resumed at the cursors"

    for name in TABLES:
        assert table(killed, name).equals(table(clean_dir, name)), name
    for address in (ALICE, BOB):
        got = table(killed, "fills").filter(pa.compute.equal(
            table(killed, "fills")["address"], address))
        assert rows(got, FILL_COLUMNS) == fill_truth(hl.fills(address))
        funding = table(killed, "funding_payments")
        funding = funding.filter(pa.compute.equal(funding["address"], address))
        assert rows(funding, FUNDING_COLUMNS) == funding_truth(hl.funding(address, START))
        ledger = table(killed, "ledger_updates")
        ledger = ledger.filter(pa.compute.equal(ledger["address"], address))
        assert rows(ledger, LEDGER_COLUMNS) == ledger_truth(hl.ledger(address, START))
