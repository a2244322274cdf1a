"""``candlekeep scan run`` after a backfill and order-book snapshots from the sim:
``--dry-run`` scores and writes nothing; a run writes the artifacts its JSON names; an
unknown profile is refused with the valid names."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import yaml

from tests.cli.conftest import cli, cli_json

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def test_scan_run_dry_then_for_real(tmp_path: Path) -> None:
    start = int(time.time() * 1000) // H * H - 4 * 24 * H
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "series": [{"source": "sim", "symbols": SYMBOLS, "timeframes": ["1h"],
                    "start": start}],
        "universes": {"majors": {"source": "sim", "symbols": SYMBOLS}},
        "jobs": [{"name": "books", "type": "orderbook", "params": {"universe": "majors"}}]}))
    cli(path, "backfill", check=True)
    cli(path, "run", "books", check=True)

    dry = cli_json(path, "scan", "run", "warm", "--dry-run")
    assert dry["ok"] and dry["details"]["symbols"] == 3
    assert not (tmp_path / "data" / "artifacts").exists()

    done = cli_json(path, "scan", "run", "warm")
    assert done["ok"] and done["details"]["passed"] == dry["details"]["passed"]
    folder = tmp_path / "data" / "artifacts" / "scans" / "majors" / "warm"
    [run_dir] = list(folder.iterdir())
    rows = list(csv.DictReader((run_dir / "signals.csv").open()))
    assert sorted(r["symbol"] for r in rows) == sorted(SYMBOLS)
    passed = sorted(r["symbol"] for r in rows if r["passed"] == "true")
    assert passed == sorted(p["symbol"] for p in done["details"]["passed"])
    assert all(float(r["score"]) >= 65 for r in rows if r["passed"] == "true")

    bad = cli(path, "scan", "run", "lukewarm")
    assert bad.returncode == 2 and "hot, warm, custom, premove" in bad.stdout + bad.stderr
