"""``candlekeep regime --json`` after a backfill from the sim: the verdict shown is the
one plain Python computes from the stored closes at the reported ``as_of``; nothing is
recorded without ``--record``, and ``--record`` writes regime.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from candlekeep.core.timeutil import to_ms
from tests.cli.conftest import cli, cli_json

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def test_regime_json_matches_the_stored_closes(tmp_path: Path) -> None:
    start = int(time.time() * 1000) // H * H - 9 * 24 * H
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "series": [{"source": "sim", "symbols": SYMBOLS, "timeframes": ["1h"],
                    "start": start}],
        "universes": {"majors": {"source": "sim", "symbols": SYMBOLS}}}))
    cli(path, "backfill", check=True)
    found = cli_json(path, "regime")
    assert found["universe"] == "majors" and found["timeframe"] == "1h"

    import duckdb

    con = duckdb.connect(str(tmp_path / "data" / "candles.duckdb"), read_only=True)
    as_of = to_ms(found["as_of"])
    rows = con.execute("SELECT symbol, epoch_ms(ts), close FROM candles WHERE timeframe='1h'"
                       ).fetchall()
    con.close()
    closes = {(s, t): c for s, t, c in rows}
    above = [closes[s, as_of] > sum(closes[s, as_of - i * H] for i in range(20)) / 20
             for s in SYMBOLS]
    up = [closes[s, as_of] > closes[s, as_of - 24 * H] for s in SYMBOLS]
    assert found["indicators"]["above_ma_share"]["value"] == sum(above) / 3
    assert found["indicators"]["breadth"]["value"] == sum(up) / 3
    assert not (tmp_path / "data" / "artifacts").exists()  # shown, not recorded

    recorded = cli_json(path, "regime", "--record")
    latest = tmp_path / "data" / "artifacts" / "regime" / "majors" / "latest.json"
    assert json.loads(latest.read_text()) == recorded
    table = cli(path, "regime", check=True).stdout
    assert "universe majors" in table and "above_ma_share" in table
