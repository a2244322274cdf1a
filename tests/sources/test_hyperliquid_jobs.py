"""Hyperliquid candles through the unchanged backfill and ingest jobs: a ``type:
hyperliquid`` source config against the sim over HTTP, stored candles equal the sim's
truth, a start older than the 5,000-candle horizon starts at it with a warning."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import HOUR_MS, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.records import fmt_num
from candlekeep.sim.hyperliquid.spec import HyperliquidSpec
from candlekeep.sim.server import run_in_thread
from candlekeep.state.statuses import HORIZON_CHECKPOINT
from tests.jobs.test_pipeline import run

NOW = to_ms("2024-12-01T12:00:30Z")
PERP = SeriesKey("hl", "BTC/USDC:USDC", "1h")
SPOT = SeriesKey("hl", "HYPE/USDC", "1h")
COINS = {PERP.symbol: "BTC", SPOT.symbol: "@1"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW, autoadvance=True)


@pytest.fixture
def hl(clock: FakeClock) -> HyperliquidSim:
    ex = SimExchange(7, clock=clock, holes=None, transient=None)
    return HyperliquidSim(ex, HyperliquidSpec(listing="2023-01-01"))


@pytest.fixture
def url(hl: HyperliquidSim) -> Iterator[str]:
    with run_in_thread(hl.exchange, hyperliquid=hl) as base:
        yield base


@pytest.fixture
async def runtime(tmp_path: Path, url: str,
                  clock: FakeClock) -> AsyncIterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(start: str) -> Runtime:
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": {"hl": {"type": "hyperliquid", "base_url": url, "max_attempts": 3}},
            "series": [{"source": "hl", "symbols": [PERP.symbol, SPOT.symbol],
                        "timeframes": ["1h"], "start": start}],
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=clock)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def assert_truth(rt: Runtime, hl: HyperliquidSim, key: SeriesKey, start: int,
                 end: int) -> None:
    got = rt.store("main").read_candles(key, start, end)
    want = hl.candles(COINS[key.symbol], key.timeframe, start, end - 1)
    assert pc.cast(got["ts"], pa.int64()).to_pylist() == want.ts.tolist()
    for col in ("open", "high", "low", "close"):
        assert got[col].to_pylist() == getattr(want, col).tolist(), col
    assert got["volume"].to_pylist() == [float(fmt_num(v, 5)) for v in want.volume.tolist()]
    assert got["trades"].to_pylist() == want.trades.tolist()


async def test_backfill_within_the_horizon_stores_the_truth(
        runtime: Callable[..., Runtime], hl: HyperliquidSim) -> None:
    rt = runtime("2024-11-20")
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert not res.warnings
    end = parse_timeframe("1h").floor(NOW)
    for key in (PERP, SPOT):
        assert_truth(rt, hl, key, to_ms("2024-11-20"), end)
        assert rt.state.get_checkpoint("backfill", key) == end


async def test_backfill_older_than_the_horizon_starts_at_it(
        runtime: Callable[..., Runtime], hl: HyperliquidSim, clock: FakeClock) -> None:
    rt = runtime("2024-01-01")
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    end = parse_timeframe("1h").floor(NOW)
    horizon = end - 4999 * HOUR_MS
    assert len(res.warnings) == 2
    assert all("newest 5000 1h candles" in w and "starts at the exchange's horizon" in w
               for w in res.warnings)
    for key in (PERP, SPOT):
        assert_truth(rt, hl, key, horizon, end)
        assert rt.state.get_checkpoint(HORIZON_CHECKPOINT, key) == horizon
        assert rt.store("main").read_candles(key).num_rows == 4999  # the 5,000th is open
    # An hour later ingest adds the one new candle per series; the oldest one, now past
    # the exchange's horizon, exists only in the store.
    await clock.advance(3600)
    ingest = await run(rt, "ingest")
    assert ingest.ok, ingest.errors
    for key in (PERP, SPOT):
        assert_truth(rt, hl, key, horizon + HOUR_MS, end + HOUR_MS)
        assert rt.store("main").read_candles(key).num_rows == 5000
