"""CLI end-to-end fixtures: a sim exchange over HTTP on loopback and a config pointing at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread

DAY = 86_400_000


@dataclass
class Sim:
    exchange: SimExchange
    url: str


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Sim]:
    """The sim over HTTP; parametrize indirectly with SimExchange keyword arguments."""
    kwargs: dict[str, Any] = {"faults": Faults()}
    kwargs.update(getattr(request, "param", None) or {})
    ex = SimExchange(7, {"BTC/USDT": "2017-08-17", "ETH/USDT": "2017-08-17"}, **kwargs)
    with run_in_thread(ex) as url:
        yield Sim(ex, url)


def write_config(folder: Path, url: str, *, start_ms: int, symbols: list[str],
                 timeframes: list[str], source_extra: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = {"type": "ccxt", "exchange": "binance", "base_url": url, "max_attempts": 8}
    source.update(source_extra or {})
    cfg = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sb": source},
        "series": [{"source": "sb", "symbols": symbols, "timeframes": timeframes,
                    "start": start_ms}],
    }
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(config: Path | None, *args: str, check: bool = False,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "candlekeep"]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "CANDLEKEEP_CONFIG"}
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{args} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def cli_json(config: Path, *args: str) -> Any:
    out = cli(config, *args, "--json", check=True)
    return json.loads(out.stdout)
