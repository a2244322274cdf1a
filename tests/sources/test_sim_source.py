"""SimSource: the simulated exchange in-process, with the CCXT source's fetch semantics."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import BadReplyError, SourceError
from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, Hole, SimExchange, TransientSpec
from candlekeep.sources.sim_source import SimSource

NOW = to_ms("2025-01-01T12:00:30Z")
DAY = to_ms("2024-06-01")


def make(**kwargs: object) -> tuple[SimSource, SimExchange, FakeClock]:
    clock = FakeClock(NOW, autoadvance=True)
    kwargs.setdefault("transient", None)
    ex = SimExchange(7, clock=clock, **kwargs)  # type: ignore[arg-type]
    return SimSource("sim", exchange=ex), ex, clock


def ts_list(table: pa.Table) -> list[int]:
    values: list[int] = pc.cast(table["ts"], pa.int64()).to_pylist()
    return values


async def test_fetch_pages_and_matches_the_model() -> None:
    src, ex, _ = make()
    got = await src.fetch_candles("BTC/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    assert got.schema.equals(CANDLE_SCHEMA)
    expected = ex.expected("BTC/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    assert got.drop_columns(["ingested_at"]).equals(expected.drop_columns(["ingested_at"]))
    assert src.page_limit("1m") == 1000
    assert src.stats.requests == 5  # 4,320 minutes in pages of 1,000
    assert src.stats.weight_used == 10
    assert set(got["source"].unique().to_pylist()) == {"sim"}


async def test_default_construction_from_a_seed() -> None:
    a = SimSource("a", seed=3, clock=FakeClock(NOW))
    b = SimSource("b", seed=3, clock=FakeClock(NOW))
    ta = await a.fetch_candles("ETH/USDT", "1h", DAY, DAY + 2 * DAY_MS)
    tb = await b.fetch_candles("ETH/USDT", "1h", DAY, DAY + 2 * DAY_MS)
    assert ta["close"].equals(tb["close"])
    assert 44 <= ta.num_rows <= 48  # default late data may hold back an hour or two


async def test_holes_missing_and_only_closed_candles() -> None:
    src, _, _ = make(extra_holes=[Hole(DAY + 10 * MINUTE_MS, DAY + 20 * MINUTE_MS)],
                     holes=None)
    got = ts_list(await src.fetch_candles("SOL/USDT", "1m", DAY, DAY + HOUR_MS))
    assert len(got) == 50 and DAY + 10 * MINUTE_MS not in got
    recent = ts_list(await src.fetch_candles("SOL/USDT", "1m", NOW - 5 * MINUTE_MS,
                                             NOW + HOUR_MS))
    assert recent[-1] == NOW - NOW % MINUTE_MS - MINUTE_MS


async def test_late_data_appears_on_the_second_fetch() -> None:
    src, _, _ = make(holes=None, transient=TransientSpec(probability=1.0))
    first = await src.fetch_candles("BTC/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    second = await src.fetch_candles("BTC/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    assert second.num_rows == 3 * 1440 > first.num_rows


async def test_markets_and_first_candle() -> None:
    src, _, _ = make(symbols={"BTC/USDT": "2017-08-17", "NEW/USDT": "2030-01-01"})
    markets = await src.markets()
    assert markets["BTC/USDT"].active and markets["BTC/USDT"].listing_ms == to_ms("2017-08-17")
    assert not markets["NEW/USDT"].active
    assert await src.first_candle_ms("BTC/USDT", "1d", 0) == to_ms("2017-08-17")
    assert await src.first_candle_ms("NEW/USDT", "1d", 0) is None
    swap = SimSource("perps", exchange=src.exchange, market_type="swap")
    assert "BTC/USDT:USDT" in await swap.markets()


async def test_transient_faults_are_retried() -> None:
    src, ex, clock = make()
    ex.force("503", 2)
    ex.force("truncate")
    ex.force("429", retry_after_s=9)
    got = await src.fetch_candles("ETH/USDT", "1h", DAY, DAY + DAY_MS)
    assert got.num_rows == 24
    assert src.stats.retries == 4 and src.stats.rate_limited == 1
    assert any(s >= 9 for s in clock.slept)


async def test_rate_limit_from_the_budget() -> None:
    src, _, _ = make(faults=Faults(weight_limit=4, window_s=60, ban_after=10))
    got = await src.fetch_candles("ETH/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    assert got.num_rows > 4000
    assert src.stats.rate_limited >= 1  # the in-process source has no limiter: it waits


async def test_corrupt_reply_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    src, ex, _ = make()
    ex.force("high_low")
    with caplog.at_level(logging.WARNING), pytest.raises(BadReplyError):
        await src.fetch_candles("BTC/USDT", "1h", DAY, DAY + DAY_MS)
    assert src.stats.rejected_replies == 1 and src.stats.retries == 0
    assert "reply rejected source=sim symbol=BTC/USDT" in caplog.text


async def test_bad_symbol_and_timeframe() -> None:
    src, _, _ = make()
    with pytest.raises(SourceError, match=r"no market .NOPE/USDT.; did you mean"):
        await src.fetch_candles("NOPE/USDT", "1h", DAY, DAY + DAY_MS)
    with pytest.raises(SourceError, match="timeframe"):
        await src.fetch_candles("BTC/USDT", "7m", DAY, DAY + DAY_MS)
    with pytest.raises(SourceError):
        SimSource("x", market_type="margin")


async def test_requests_are_metered_per_job() -> None:
    from candlekeep.sources.metering import metered

    src, _, _ = make()
    with metered() as meter:
        await src.fetch_candles("BTC/USDT", "1m", DAY, DAY + 2 * DAY_MS)
    assert meter.requests == src.stats.requests == 3 and meter.weight == 6
