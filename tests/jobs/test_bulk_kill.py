"""kill -9 in the middle of a bulk backfill, then a rerun: the store ends up exactly as after
an uninterrupted run, and exactly the exchange's candles.

``candlekeep backfill`` runs as a real subprocess against the sim (REST and archive) served
from this process. Monthly files are slowed so the kill lands while files are still in
flight, after the first durable write: that write is the one forced by a file with a bad
CHECKSUM (refetched, still bad, so its day comes from REST), so the fallback path is in the
killed run. ETH's 2024-08-30 is missing from the archive (a 404: REST, no warning). The
uninterrupted run goes on meanwhile, from its own folder, against the same server.
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
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from tests.waiting import until

pytestmark = pytest.mark.slow

SYMBOLS = ("BTC/USDT", "ETH/USDT")
TF = "5m"
START, END = to_ms("2024-08-27"), to_ms("2025-01-01")  # Aug 27-31 daily, Sep-Dec monthly
NOW = to_ms("2025-01-10T06:00:00Z")  # the sim's clock: every file of the range published
BAD_DAY = "BTCUSDT-5m-2024-08-29.zip"
COLUMNS = ("source", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
           "quote_volume", "trades")


@pytest.fixture(scope="module")
def exchange() -> SimExchange:
    return SimExchange(11, dict.fromkeys(SYMBOLS, "2017-08-17"), clock=FakeClock(NOW),
                       transient=None)


@pytest.fixture(scope="module")
def sim_url(exchange: SimExchange) -> Iterator[str]:
    faults = (
        ArchiveFault(FaultKind.BAD_CHECKSUM, f"data/spot/daily/klines/BTCUSDT/5m/{BAD_DAY}"),
        ArchiveFault(FaultKind.MISSING, "data/spot/daily/klines/ETHUSDT/5m/ETHUSDT-5m-2024-08-30"),
        ArchiveFault(FaultKind.SLOW, "data/spot/monthly/", delay_s=0.15),
    )
    with run_in_thread(exchange, archive=ArchiveSpec(faults=faults)) as url:
        yield url


def write_config(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True)
    cfg = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"bn": {"type": "ccxt", "exchange": "binance", "base_url": url,
                           "max_attempts": 3, "bulk": {"base_url": url, "concurrency": 2}}},
        "series": [{"source": "bn", "symbols": list(SYMBOLS), "timeframes": [TF],
                    "start": START, "end": END}],
    }
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def backfill_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "candlekeep", "--config", str(config), "backfill", "--json"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CANDLEKEEP_CONFIG"}


def start_backfill(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(backfill_cmd(config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The ``--json`` result of a backfill run to its end."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"backfill exited {proc.returncode}\n{out}\n{err}"
    res: dict[str, Any] = json.loads(out)
    assert res["ok"], res
    return res


def checkpoint(config: Path, symbol: str) -> int | None:
    """The series' backfill checkpoint, read from the state DB the subprocess writes."""
    state = config.parent / "data" / "state.db"
    if not state.exists():
        return None
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as con:
            row = con.execute("SELECT position FROM checkpoints WHERE job = 'backfill' "
                              "AND symbol = ? AND timeframe = ?", (symbol, TF)).fetchone()
    except sqlite3.OperationalError:  # not created yet, or busy for a moment
        return None
    return None if row is None else int(row[0])


def stored(config: Path) -> pa.Table:
    """The whole candles table but ingested_at, in key order."""
    db = config.parent / "data" / "candles.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(f"SELECT {', '.join(COLUMNS)} FROM candles ORDER BY ALL").to_arrow_table()


def truth(exchange: SimExchange) -> pa.Table:
    parts = [exchange.expected(s, TF, START, END, source="bn") for s in SYMBOLS]
    return pa.concat_tables(parts).select(list(COLUMNS)).sort_by(
        [("source", "ascending"), ("symbol", "ascending"), ("timeframe", "ascending"),
         ("ts", "ascending")])


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.num_rows == want.num_rows
    for col in COLUMNS:
        assert got[col].cast(want.schema.field(col).type).equals(want[col]), col


async def test_kill_9_mid_bulk_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, exchange: SimExchange, sim_url: str
) -> None:
    clean_dir = write_config(tmp_path / "clean", sim_url)
    clean_run = start_backfill(clean_dir)
    killed = write_config(tmp_path / "killed", sim_url)
    log = tmp_path / "killed.log"
    try:
        with log.open("wb") as sink:
            proc = subprocess.Popen(backfill_cmd(killed), stdout=sink,
                                    stderr=subprocess.STDOUT, env=env())
        try:
            def stored_a_file() -> int | None:
                assert proc.poll() is None, f"backfill ended before the kill:\n{log.read_text()}"
                return checkpoint(killed, "BTC/USDT")

            position = await until(stored_a_file, "BTC's first durable archive write", 30)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert START < position < END, "killed mid-bulk"
        # Files before the bad day are held for one batched write (WRITE_ROWS), which the
        # fallback to REST forces: the checkpoint we waited for comes after the bad file.
        assert BAD_DAY in log.read_text(), "the killed run went through the REST fallback"
        partial = stored(killed)
        assert 0 < partial.num_rows < truth(exchange).num_rows

        resumed = finished(start_backfill(killed))
        clean = finished(clean_run)
    finally:
        clean_run.kill()
        clean_run.communicate()
    # The rerun resumed at the checkpoint: it neither refetched BTC's stored days nor wrote
    # as much as the uninterrupted run.
    assert resumed["rows_written"] < clean["rows_written"]
    assert resumed["details"]["archive"]["files"] < clean["details"]["archive"]["files"]
    assert any(BAD_DAY in w for w in clean["warnings"])

    after_kill = stored(killed)
    assert_same(after_kill, stored(clean_dir))
    assert_same(after_kill, truth(exchange))
