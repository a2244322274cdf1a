"""``candlekeep --help`` and ``candlekeep list`` start without the heavy parts: no CCXT, no
DuckDB, no scheduler engine, no pyarrow, no SQLAlchemy (bench/cli_startup.py times them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HEAVY = ("ccxt", "duckdb", "pyarrow", "sqlalchemy", "numpy", "candlekeep.scheduler.engine")
DRIVER = """
import sys
from candlekeep.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
heavy = sys.stdin.read().split()
print("IMPORTED", *sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
"""


def imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("CANDLEKEEP_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", DRIVER, *args], input=" ".join(HEAVY),
                         capture_output=True, text=True, env=env, timeout=60)
    line = next(x for x in out.stderr.splitlines() if x.startswith("IMPORTED"))
    return set(line.split()[1:]), out.stdout


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"binance": {"type": "ccxt", "exchange": "binance"}},
        "series": [{"source": "binance", "symbols": ["BTC/USDT"], "timeframes": ["1m"],
                    "start": "2025-01-01"}],
        "jobs": [{"name": "ingest.fast", "type": "ingest", "schedule": "*/5 * * * *"},
                 {"name": "gaps", "type": "gaps_repair", "schedule": "0 * * * *"},
                 {"name": "report", "type": "command", "schedule": "0 8 * * *",
                  "params": {"argv": ["true"]}}]}))
    return path


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    mods, out = imported(tmp_path, "--help")
    assert mods == set() and "Commands:" in out


def test_list_with_a_ccxt_source_imports_nothing_heavy(tmp_path: Path, cfg: Path) -> None:
    imported(tmp_path, "--config", str(cfg), "list")  # creates the state DB, caches CCXT facts
    mods, out = imported(tmp_path, "--config", str(cfg), "list")
    assert mods == set(), mods
    assert "ingest.fast" in out and "every 5 minutes" in out
    assert list((tmp_path / "cache" / "candlekeep").glob("ccxt-*.json"))
