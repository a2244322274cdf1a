"""Universes resolved from a DuckDB store: fixed lists as configured, the top N by average
daily quote volume (close x volume when the exchange gave none), stablecoins and symbols
without recent daily candles listed with their reasons, ties by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from candlekeep.config import parse_config
from candlekeep.core.errors import ConfigError
from candlekeep.core.schema import candles_from_columns
from candlekeep.core.timeframes import DAY_MS
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.universe import resolve_universe

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
NOW = T0 + 10 * DAY_MS + 5 * 3_600_000  # day 10 is in progress: days 7, 8, 9 are the window


def config(tmp_path: Path, universes: dict[str, Any]) -> Any:
    return parse_config({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "universes": universes}, str(tmp_path / "candlekeep.yaml"), tmp_path)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(config(tmp_path, {
        "top": {"source": "sim", "top": {"n": 3, "days": 3}},
        "top_all": {"source": "sim", "top": {"n": 9, "days": 3, "exclude_stablecoins": False}},
        "fixed": {"source": "sim", "symbols": ["ETH/USDT", "BTC/USDT", "ETH/USDT"]}}))
    yield rt
    await rt.aclose()


def daily(symbol: str, days: list[int], close: float, volume: float,
          quote: float | None) -> pa.Table:
    ts = [T0 + d * DAY_MS for d in days]
    n = len(ts)
    return candles_from_columns("sim", symbol, "1d", ts, [close] * n, [close] * n,
                                [close] * n, [close] * n, [volume] * n, 0,
                                quote_volume=[quote] * n)


def fill(rt: Runtime) -> None:
    store = rt.store("main")
    for t in (
        daily("AAA/USDT", [7, 8, 9], 1.0, 1.0, 300.0),      # 300 a day
        daily("BBB/USDT", [7, 8, 9], 1.0, 1.0, 300.0),      # 300: ties AAA, ranks after it
        daily("CCC/USDT", [7, 8, 9], 2.0, 200.0, None),     # 2 x 200 = 400 a day, estimated
        daily("DDD/USDT", [9], 1.0, 1.0, 600.0),            # 600 over 3 days: 200 a day
        daily("USDC/USDT", [7, 8, 9], 1.0, 1.0, 10_000.0),  # a stablecoin
        daily("OLD/USDT", [1, 2], 1.0, 1.0, 10_000.0),      # nothing in the window
        daily("AAA/USDT", [10], 1.0, 1.0, 1e9),             # today's candle: not counted
        daily("AAA/USDT", [6], 1.0, 1.0, 1e9),              # before the window
    ):
        store.upsert_candles(t)


def test_top_by_volume_ranks_excludes_and_breaks_ties(runtime: Runtime) -> None:
    fill(runtime)
    u = resolve_universe(runtime, runtime.config, "top", NOW)
    assert u.symbols == ("CCC/USDT", "AAA/USDT", "BBB/USDT")
    assert u.volumes == {"CCC/USDT": 400.0, "AAA/USDT": 300.0, "BBB/USDT": 300.0}
    assert u.estimated == frozenset({"CCC/USDT"})
    assert u.excluded == {"OLD/USDT": "no 1d candles in the last 3 days",
                          "USDC/USDT": "stablecoin"}
    assert (u.source, u.store) == ("sim", "main")
    everything = resolve_universe(runtime.store("main"), runtime.config, "top_all", NOW)
    assert everything.symbols == ("USDC/USDT", "CCC/USDT", "AAA/USDT", "BBB/USDT", "DDD/USDT")
    assert everything.volumes["DDD/USDT"] == 200.0
    assert everything.excluded == {"OLD/USDT": "no 1d candles in the last 3 days"}


def test_fixed_list_is_as_configured(runtime: Runtime) -> None:
    u = resolve_universe(runtime, runtime.config, "fixed", NOW)
    assert u.symbols == ("ETH/USDT", "BTC/USDT") and u.excluded == {}


def test_unknown_universe_names_the_defined_ones(runtime: Runtime) -> None:
    with pytest.raises(ConfigError, match=r"unknown universe 'nope'.*defined: top, top_all, fixed"):
        resolve_universe(runtime, runtime.config, "nope", NOW)
