"""``candlekeep availability update`` end to end: a real process, the sim over HTTP (on the
wall clock, as a user would run it), a DuckDB store, the run recorded under the job."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.availability.dataset import AVAILABILITY
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.stores.duckdb_store import DuckDBStore
from tests.availability.tracker_sim import DELISTINGS, SYMBOLS
from tests.cli.conftest import cli


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Any] = []

    def start(*faults: ArchiveFault) -> str:
        cm = run_in_thread(SimExchange(7, SYMBOLS, transient=None, delistings=DELISTINGS),
                           archive=ArchiveSpec(faults=faults, page_size=2,
                                               intervals=("1h", "1d")))
        started.append(cm)
        return cm.__enter__()

    yield start
    for cm in started:
        cm.__exit__(None, None, None)


def config(folder: Path, url: str, **params: Any) -> Path:
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/avail.duckdb"}},
        "sources": {"um": {"type": "ccxt", "exchange": "binanceusdm", "market_type": "swap",
                           "base_url": url, "bulk": {"base_url": url}}},
        "jobs": [{"name": "um-files", "type": "availability", "schedule": "30 3 * * *",
                  "slo": {"target": 0.95},
                  "params": {"data_type": "klines/1h", "lookback": 3, "min_symbols": 3,
                             "listing_url": f"{url}/data.binance.vision", **params}}],
    }, allow_unicode=True))
    return path


def test_update_probes_stores_and_summarises(tmp_path: Path, serve: Any) -> None:
    cfg = config(tmp_path, serve())
    out = cli(cfg, "availability", "update", "--no-volumes", check=True)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    first = yesterday - dt.timedelta(days=2)
    assert f"futures/um klines/1h {first} .. {yesterday}: symbols 6 (exchange 5, archive " \
           "listing 6, archive only 1)" in out.stdout
    # OLD and GONE were delisted in 2025: missing; the other four published every day
    assert "probes 18: available 12, missing 6, error 0" in out.stdout
    assert "cross_check: ok: 4 of 4 live trading symbols (100.0%)" in out.stdout
    assert "availability update: ok" in out.stdout
    store = DuckDBStore("main", tmp_path / "data" / "avail.duckdb")
    try:
        t = store.read(AVAILABILITY)
    finally:
        store.close()
    assert t.num_rows == 18 and set(t["data_type"].to_pylist()) == {"klines/1h"}
    assert "币安人生USDT" in t["symbol"].to_pylist()
    # --json, an explicit --job and --date: the run's details, recorded under the job
    out = cli(cfg, "availability", "update", "--job", "um-files", "--date",
              str(first), "--lookback", "1", "--json", check=True)
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["details"]["from"] == doc["details"]["to"] == str(first)
    assert doc["details"]["probes"] == 6
    history = json.loads(cli(cfg, "history", "um-files", "--json", check=True).stdout)
    assert [r["status"] for r in history] == ["success", "success"]


def test_a_failed_run_exits_1_and_says_why(tmp_path: Path, serve: Any) -> None:
    cut = ArchiveFault(FaultKind.TRUNCATED, "data/futures/um/daily/klines/", listing=True)
    cfg = config(tmp_path, serve(cut), retries=2)
    out = cli(cfg, "availability", "update")
    assert out.returncode == 1
    assert "archive listing page" in out.stdout and "malformed XML" in out.stdout
    assert "availability update: failed" in out.stdout
    out = cli(cfg, "availability", "update", "--job", "nope")
    assert out.returncode == 2 and "no job named 'nope' (jobs: um-files)" in out.stderr
