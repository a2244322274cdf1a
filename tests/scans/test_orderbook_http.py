"""Order books over HTTP: real CCXT ``fetch_order_book`` against the sim's Binance depth
endpoints (wire format, weights by limit, errors), and the ``orderbook`` job on a CCXT
source storing in DuckDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
from candlekeep.scans.orderbook import snapshot_row
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.ccxt_source import CcxtSource
from tests.jobs.test_pipeline import run

NOW = to_ms("2025-03-04T05:06:07.890Z")


@pytest.fixture(scope="module")
def exchange() -> SimExchange:
    return SimExchange(7, clock=FakeClock(NOW), holes=None, transient=None,
                       faults=Faults(weight_limit=10**9, fapi_weight_limit=10**9))


@pytest.fixture(scope="module")
def url(exchange: SimExchange) -> Iterator[str]:
    with run_in_thread(exchange) as base:
        yield base


@pytest.fixture
async def spot(url: str) -> AsyncIterator[CcxtSource]:
    src = CcxtSource("binance", "binance", base_url=url, clock=FakeClock(NOW, autoadvance=True))
    yield src
    await src.close()


@pytest.fixture
async def usdm(url: str) -> AsyncIterator[CcxtSource]:
    src = CcxtSource("binance", "binance", market_type="swap", base_url=url,
                     clock=FakeClock(NOW, autoadvance=True))
    yield src
    await src.close()


async def test_ccxt_reads_the_sims_spot_book(spot: CcxtSource, exchange: SimExchange) -> None:
    await spot.markets()
    before = spot.stats.weight_used
    bids, asks = await spot.order_book("ETH/USDT", 100)
    truth = exchange.order_book("ETH/USDT", 100)
    assert np.array_equal(bids, truth.bids) and np.array_equal(asks, truth.asks)
    assert spot.stats.weight_used - before == 5
    await spot.order_book("ETH/USDT", 101)
    assert spot.stats.weight_used - before == 5 + 25


async def test_ccxt_reads_a_usdm_book_and_a_bad_limit_is_refused(
        usdm: CcxtSource, exchange: SimExchange) -> None:
    bids, asks = await usdm.order_book("BTC/USDT:USDT", 5)
    truth = exchange.order_book("BTC/USDT:USDT", 5)
    assert np.array_equal(bids, truth.bids) and np.array_equal(asks, truth.asks)
    r = snapshot_row("binance", "BTC/USDT:USDT", NOW, bids, asks, ingested_ms=NOW)
    assert r["bid_levels"] == r["ask_levels"] == 5
    with pytest.raises(SourceError, match="-1130"):
        await usdm.order_book("BTC/USDT:USDT", 7)  # USDⓈ-M takes 5, 10, 20, 50, ...


async def test_job_on_a_ccxt_source(tmp_path: Path, url: str) -> None:
    cfg = parse_config({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/books.duckdb"}},
        "sources": {"binance": {"type": "ccxt", "exchange": "binance", "base_url": url,
                                "max_attempts": 2}},
        "universes": {"few": {"source": "binance",
                              "symbols": ["BTC/USDT", "ETH/USDT", "XYZ/USDT"]}},
    }, str(tmp_path / "candlekeep.yaml"), tmp_path)
    rt = Runtime(cfg, clock=FakeClock(NOW, autoadvance=True))
    try:
        res = await run(rt, "orderbook", universe="few", limit=100)
        assert res.ok, res.errors
        assert res.rows_written == 2
        assert [f["symbol"] for f in res.details["failed"]] == ["XYZ/USDT"]
        got = rt.store("main").read(ORDERBOOK_SNAPSHOTS).sort_by("symbol")
        assert got["symbol"].to_pylist() == ["BTC/USDT", "ETH/USDT"]
        spread = dict(zip(got["symbol"].to_pylist(), got["spread_bps"].to_pylist(),
                          strict=True))
        assert spread["ETH/USDT"] < 50 < spread["BTC/USDT"]
    finally:
        await rt.aclose()
