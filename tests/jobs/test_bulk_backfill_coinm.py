"""Bulk backfill of a Binance COIN-M series (``binancecoinm``) against the sim over HTTP.

The archive's ``futures/cm`` files count volume in contracts and name their columns after
the base asset (from 2022-05 on; older files have no header); REST klines come from
``/dapi``. Both must store what CCXT reads, so bulk, REST-only and the sim's truth agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.sim.archive import CSV_HEADER_COINM, ArchiveSpec, SimArchive, parse_key
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from tests.jobs.test_bulk_backfill import assert_equal
from tests.jobs.test_pipeline import run

NOW = to_ms("2025-01-03T12:00:30Z")
START = to_ms("2022-03-20")  # March and April 2022 files have no header, later ones do
KEY = SeriesKey("cm", "ETH/USD:ETH", "4h")


@pytest.fixture(scope="module")
def exchange() -> SimExchange:
    return SimExchange(7, {"BTC/USDT": "2019-09-08", "ETH/USDT": "2020-08-10"},
                       clock=FakeClock(NOW), transient=None)


@pytest.fixture(scope="module")
def url(exchange: SimExchange) -> Iterator[str]:
    with run_in_thread(exchange, archive=ArchiveSpec()) as base:
        yield base


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(url: str, *, bulk: bool) -> Runtime:
        source: dict[str, Any] = {"type": "ccxt", "exchange": "binancecoinm",
                                  "market_type": "swap", "base_url": url, "max_attempts": 2}
        if bulk:
            source["bulk"] = {"base_url": url, "concurrency": 3}
        home = tmp_path / ("bulk" if bulk else "rest")
        home.mkdir()
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": {"cm": source},
            "series": [{"source": "cm", "symbols": [KEY.symbol], "timeframes": [KEY.timeframe],
                        "start": START}],
        }, str(home / "candlekeep.yaml"), home)
        rt = Runtime(cfg, clock=FakeClock(NOW, autoadvance=True))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def stored(rt: Runtime) -> pa.Table:
    return rt.store("main").read_candles(KEY).drop_columns(["ingested_at"]).sort_by("ts")


def test_the_archive_files_are_coin_m_shaped(exchange: SimExchange) -> None:
    archive = SimArchive(exchange)
    old = parse_key("data/futures/cm/monthly/klines/ETHUSD_PERP/4h/ETHUSD_PERP-4h-2022-04.zip")
    new = parse_key("data/futures/cm/monthly/klines/ETHUSD_PERP/4h/ETHUSD_PERP-4h-2024-11.zip")
    assert old is not None and new is not None
    assert archive.csv_bytes(old[0]).split(b"\n", 1)[0][:1].isdigit()
    header, first = archive.csv_bytes(new[0]).decode().split("\n")[:2]
    assert header == CSV_HEADER_COINM
    assert first.split(",")[5].isdigit()  # contracts


async def test_bulk_rest_and_truth_agree(exchange: SimExchange, url: str,
                                         runtime: Callable[..., Runtime]) -> None:
    truth = exchange.expected(KEY.symbol, KEY.timeframe, START, NOW, source="cm")
    truth = truth.drop_columns(["ingested_at"]).sort_by("ts")

    bulk = runtime(url, bulk=True)
    res = await run(bulk, "backfill")
    assert res.ok, res.errors
    assert not res.warnings
    assert_equal(stored(bulk), truth)
    # 2022-03 .. 2024-12 monthly (34), 2025-01-01 and 02 daily; only today through REST.
    assert res.details["archive"]["files"] == 36
    assert res.details["archive"]["rejected"] == 0
    assert res.requests < 20

    rest = runtime(url, bulk=False)
    res = await run(rest, "backfill")
    assert res.ok, res.errors
    assert "archive" not in res.details
    assert_equal(stored(rest), truth)
    assert res.requests > 15  # 1,000 days of 4h through 499-candle pages
