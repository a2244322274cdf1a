"""The CLI as a user runs it: a subprocess, real CCXT, the sim over HTTP, real files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from candlekeep.core.timeframes import parse_timeframe
from candlekeep.sim.exchange import Faults
from tests.cli.conftest import DAY, Sim, cli, cli_json, write_config

M = 60_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(config: Path) -> list[tuple[object, ...]]:
    db = config.parent / "data" / "candles.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT source, symbol, timeframe, epoch_ms(ts), open, high, low, close, volume "
            "FROM candles ORDER BY ALL").fetchall()


def test_backfill_scan_repair_coverage(tmp_path: Path, sim: Sim) -> None:
    start = now_ms() // DAY * DAY - DAY
    cfg = write_config(tmp_path, sim.url, start_ms=start, symbols=["BTC/USDT", "ETH/USDT"],
                       timeframes=["1m", "1h"])
    bf = cli_json(cfg, "backfill")
    assert bf["ok"] and bf["rows_written"] > 2 * 1440
    scan = cli_json(cfg, "gaps", "scan")
    assert scan["details"]["gaps"] == scan["details"]["new"] > 0
    listed = cli_json(cfg, "gaps", "list", "--status", "open")
    assert len(listed) == scan["details"]["gaps"]
    cli_json(cfg, "gaps", "repair")
    rep = cli_json(cfg, "gaps", "repair")
    assert rep["ok"]
    statuses = {g["status"] for g in cli_json(cfg, "gaps", "list")}
    assert statuses <= {"repaired", "confirmed_empty"} and "confirmed_empty" in statuses
    cov = cli_json(cfg, "coverage")
    assert len(cov) == 4 and all(c["coverage_pct"] == 100.0 for c in cov)
    # Stored data equals the exchange's truth inside each stored span.
    got = rows(cfg)
    assert len(got) == len({r[:4] for r in got}), "duplicates stored"
    for c in cov:
        truth = sim.exchange.expected(c["symbol"], c["timeframe"], c["first_ms"],
                                      c["last_ms"] + 1, source="sb")
        stored = [r[3] for r in got if r[1] == c["symbol"] and r[2] == c["timeframe"]]
        assert stored == truth["ts"].cast("int64").to_pylist()
    # Ingest right after is (nearly) a no-op and the human table prints.
    ing = cli_json(cfg, "ingest")
    assert ing["ok"] and ing["rows_written"] <= 4
    table = cli(cfg, "coverage", check=True).stdout
    assert "sb:BTC/USDT:1m" in table and "100.000" in table


@pytest.mark.parametrize("sim", [{"transient": None}], indirect=True)
def test_backfill_resumes_after_kill_9(tmp_path: Path, sim: Sim) -> None:
    end = now_ms() // DAY * DAY
    start = end - 20 * DAY
    args = ["backfill", "--end", str(end)]
    common = {"start_ms": start, "symbols": ["BTC/USDT"], "timeframes": ["1m"],
              "source_extra": {"max_requests_per_second": 20}}
    killed = write_config(tmp_path / "killed", sim.url, **common)  # type: ignore[arg-type]
    cmd = [sys.executable, "-m", "candlekeep", "--config", str(killed), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed.parent / "data" / "state.db"
    deadline = time.monotonic() + 60
    position = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            try:
                with sqlite3.connect(state) as con:
                    row = con.execute("SELECT position FROM checkpoints").fetchone()
                    position = row[0] if row else None
            except sqlite3.OperationalError:
                position = None
            if position is not None:
                break
        time.sleep(0.05)  # polling a separate process's progress; not waiting on our own code
    assert position is not None and proc.poll() is None, "backfill ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert position < end
    partial = rows(killed)
    assert partial and partial[-1][3] < end
    resumed = cli_json(killed, *args)
    assert resumed["ok"]
    assert resumed["rows_written"] < 20 * 1440, "the rerun refetched history it already had"

    clean = write_config(tmp_path / "clean", sim.url, **common)  # type: ignore[arg-type]
    assert cli_json(clean, *args)["ok"]
    assert rows(killed) == rows(clean)


@pytest.mark.parametrize("sim", [{"faults": Faults(
    error_rate=0.08, error_burst=2, truncate_rate=0.08, slow_rate=0.05, slow_s=0.05,
    weight_limit=400, window_s=2.0, seed=3)}], indirect=True)
def test_faults_are_survived_without_storing_bad_rows(tmp_path: Path, sim: Sim) -> None:
    start = now_ms() // DAY * DAY - 6 * DAY
    # The client believes in a budget twice the server's, so the server answers 429s.
    cfg = write_config(tmp_path, sim.url, start_ms=start, symbols=["BTC/USDT", "ETH/USDT"],
                       timeframes=["1m", "5m"],
                       source_extra={"rate_limit": {"weight": 800, "window": "2s"}})
    res = cli_json(cfg, "backfill")
    assert res["ok"], res
    assert sim.exchange.rejected > 0, "no fault was injected"
    got = rows(cfg)
    assert len(got) == len({r[:4] for r in got})
    for sym in ("BTC/USDT", "ETH/USDT"):
        for tf in ("1m", "5m"):
            stored = [r for r in got if r[1] == sym and r[2] == tf]
            truth = sim.exchange.expected(sym, tf, stored[0][3], stored[-1][3] + 1, source="sb")
            # Late data may still be missing; nothing stored may differ from the truth.
            by_ts = {t: i for i, t in enumerate(truth["ts"].cast("int64").to_pylist())}
            for r in stored:
                i = by_ts[r[3]]
                assert r[4:9] == tuple(truth[c][i].as_py()
                                       for c in ("open", "high", "low", "close", "volume"))


def test_bad_reply_fails_loudly_and_stores_nothing(tmp_path: Path, sim: Sim) -> None:
    start = now_ms() // DAY * DAY - DAY
    cfg = write_config(tmp_path, sim.url, start_ms=start, symbols=["BTC/USDT"],
                       timeframes=["1h"])
    sim.exchange.force("high_low", count=10)
    out = cli(cfg, "-v", "backfill")
    assert out.returncode == 1
    assert "source=sb symbol=BTC/USDT" in out.stderr and "high below" in out.stderr
    db = cfg.parent / "data" / "candles.duckdb"
    if db.exists():
        assert rows(cfg) == []
    history = cli_json(cfg, "history")
    assert history[0]["status"] == "failed"


def test_bad_config_message(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", start_ms=0, symbols=["BTC/USDT"],
                       timeframes=["1m"])
    cfg.write_text(cfg.read_text().replace("exchange: binance", "exchange: binanse"))
    out = cli(cfg, "backfill")
    assert out.returncode == 2
    msg = " ".join(out.stderr.split())
    assert f"{cfg}: sources.sb.exchange: unknown CCXT exchange id 'binanse'" in msg
    assert "did you mean binance" in msg and "Traceback" not in out.stderr


def test_demo_twice_is_idempotent(tmp_path: Path) -> None:
    first = cli_json_demo(tmp_path)
    assert first["ok"] and first["gaps"].get("confirmed_empty", 0) > 0
    assert first["gaps"].get("repaired", 0) > 0
    backfill = first["steps"]["backfill"]
    # The oldest day comes from the sim's archive (yesterday's files are not out yet), one
    # of its files with a CHECKSUM that disagrees: replaced, and named in a warning.
    assert backfill["details"]["archive"]["files"] > 0
    assert backfill["details"]["archive"]["missing"] >= 1
    assert any("SOLUSDT-5m-" in w and "CHECKSUM" in w for w in backfill["warnings"])
    assert all(c["coverage_pct"] == 100.0 for c in first["coverage"])
    new_listing = [c for c in first["coverage"] if c["symbol"] == "CKEEP/USDT"]
    assert new_listing and all(c["first_ms"] > first["coverage"][0]["first_ms"]
                               for c in new_listing)
    second = cli_json_demo(tmp_path)
    assert second["ok"]
    # Only what closed since the first run is fetched again.
    assert second["steps"]["backfill"]["rows_written"] < 50
    assert second["requests"] < first["requests"] / 4


def cli_json_demo(folder: Path) -> dict:  # type: ignore[type-arg]
    import json

    out = subprocess.run([sys.executable, "-m", "candlekeep", "demo", "--json", "--days", "2"],
                         cwd=folder, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_tf_grid_of_stored_rows(tmp_path: Path, sim: Sim) -> None:
    start = now_ms() // DAY * DAY - 30 * DAY
    cfg = write_config(tmp_path, sim.url, start_ms=start, symbols=["ETH/USDT"],
                       timeframes=["1d", "1w"])
    assert cli_json(cfg, "backfill")["ok"]
    for r in rows(cfg):
        assert parse_timeframe(str(r[2])).on_grid(int(r[3]))  # type: ignore[call-overload]
