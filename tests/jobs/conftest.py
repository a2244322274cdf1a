"""An in-process pipeline: sim exchange → SimSource → DuckDB store, state in SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.runtime import Runtime
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource

DAY = 86_400_000
NOW = 1_767_225_600_000 + 13 * 3_600_000 + 17 * 60_000 + 12_345  # 2026-01-01 13:17:12.345
START = NOW // DAY * DAY - 2 * DAY


def make_config(tmp_path: Path, series: list[dict[str, Any]], **extra: Any) -> Any:
    """Source ``sim``, DuckDB store ``main``, these series; ``extra`` top-level sections
    replace or add to that."""
    raw = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "series": series,
        **extra,
    }
    return parse_config(raw, str(tmp_path / "candlekeep.yaml"), tmp_path)


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW, autoadvance=True)


@pytest.fixture
async def make_runtime(tmp_path: Path, clock: FakeClock) -> AsyncIterator[RuntimeFactory]:
    made: list[Runtime] = []

    def factory(exchange: SimExchange, symbols: list[str], timeframes: list[str],
                start: int = START) -> Runtime:
        cfg = make_config(tmp_path, [{"source": "sim", "symbols": symbols,
                                      "timeframes": timeframes, "start": start}])
        rt = Runtime(cfg, clock=clock, sources={"sim": SimSource("sim", exchange=exchange,
                                                                 clock=clock)})
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        await rt.aclose()
