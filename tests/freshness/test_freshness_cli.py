"""``candlekeep freshness`` as a user runs it: a real process on a real config."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.cli.conftest import cli

H = 3_600_000


def test_freshness_command_judges_records_and_gates(tmp_path: Path) -> None:
    start = (int(time.time() * 1000) - 3 * H) // H * H
    config = tmp_path / "candlekeep.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim"}},
        "series": [{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"],
                    "timeframes": ["1h"], "start": start}],
    }))
    cli(config, "backfill", "--symbol", "BTC/USDT", check=True)

    out = cli(config, "freshness", "--json")
    assert out.returncode == 1, out.stderr  # ETH/USDT was never fetched
    rows = {r["subject"]: r for r in json.loads(out.stdout)}
    assert rows["sim:BTC/USDT:1h"]["status"] == "ok"
    assert rows["sim:BTC/USDT:1h"]["newest_utc"].endswith("Z")
    assert rows["sim:ETH/USDT:1h"]["status"] == "missing"

    history = json.loads(cli(config, "history", "freshness", "--json", check=True).stdout)
    assert [r["status"] for r in history] == ["success"]  # a recorded run like any other

    cli(config, "backfill", check=True)
    ok = cli(config, "freshness")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "sim:ETH/USDT:1h" in ok.stdout and "ok" in ok.stdout

    shown = cli(config, "freshness", "--no-check", "--json", check=True)
    assert {r["status"] for r in json.loads(shown.stdout)} == {"ok"}
