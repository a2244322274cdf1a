"""The Source contract, one suite for every source type: the in-process sim, CCXT against
the sim's Binance REST over HTTP, and the native Hyperliquid source against the sim's
``/info``. What the base promises (paging, closed candles only, the history horizon, clear
errors for a wrong symbol or timeframe) must hold whichever source fetches one page."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.core.timeframes import HOUR_MS, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.spec import demo_spec
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.base import Source

NOW = to_ms("2024-12-01T12:00:30Z")


@dataclass
class Case:
    source: Source
    symbol: str
    truth: Callable[[str, int, int], list[int]]
    """Open times of the candles that exist in [start, end) for a timeframe."""


def _ts(table: pa.Table) -> list[int]:
    values: list[int] = pc.cast(table["ts"], pa.int64()).to_pylist()
    return values


@pytest.fixture(params=["sim", "ccxt", "hyperliquid"])
async def case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, {"BTC/USDT": "2024-06-01"}, clock=clock, transient=None,
                     faults=Faults(weight_limit=10**9, fapi_weight_limit=10**9))
    with ExitStack() as stack:
        made: Source
        if request.param == "sim":
            from candlekeep.sources.sim_source import SimSource

            made = SimSource("s", exchange=ex, clock=clock)
            symbol = "BTC/USDT"

            def truth(tf: str, start: int, end: int) -> list[int]:
                return _ts(ex.expected(symbol, tf, start, end, source="s"))
        elif request.param == "ccxt":
            from candlekeep.sources.ccxt_source import CcxtSource

            url = stack.enter_context(run_in_thread(ex))
            made = CcxtSource("c", "binance", base_url=url, clock=clock)
            symbol = "BTC/USDT"

            def truth(tf: str, start: int, end: int) -> list[int]:
                return _ts(ex.expected(symbol, tf, start, end, source="c"))
        else:
            from candlekeep.sources.hyperliquid.source import HyperliquidSource

            hl = HyperliquidSim(ex, demo_spec(7, 1, idle=0, start="2024-11-01"))
            url = stack.enter_context(run_in_thread(ex, hyperliquid=hl))
            made = HyperliquidSource("h", url, clock=clock)
            symbol = "BTC/USDC:USDC"

            def truth(tf: str, start: int, end: int) -> list[int]:
                # Hyperliquid also returns the candle holding startTime: ask from the grid
                frame = parse_timeframe(tf)
                closed = min(end, frame.floor(clock.now_ms()))
                ts: list[int] = hl.candles("BTC", tf, frame.ceil(start), closed - 1).ts.tolist()
                return ts
        try:
            yield Case(made, symbol, truth)
        finally:
            await made.close()


async def test_a_range_is_exactly_the_exchange_candles_closed_ones_only(case: Case) -> None:
    start, end = NOW - 3 * 24 * HOUR_MS, NOW + HOUR_MS  # past now: only closed candles
    got = await case.source.fetch_candles(case.symbol, "1h", start, end)
    assert _ts(got) == case.truth("1h", start, end)
    assert got.num_rows > 60 and max(_ts(got)) < parse_timeframe("1h").floor(NOW)


async def test_ranges_longer_than_a_page_are_paged(case: Case) -> None:
    tf = "1m"
    limit = case.source.page_limit(tf)
    span = min(2 * limit + 17, 4_900)  # inside Hyperliquid's 5,000-candle horizon
    end = parse_timeframe(tf).floor(NOW)
    start = end - span * 60_000
    got = await case.source.fetch_candles(case.symbol, tf, start, end)
    assert _ts(got) == case.truth(tf, start, end)


async def test_first_candle_at_or_after(case: Case) -> None:
    since = NOW - 2 * 24 * HOUR_MS + 7 * 60_000
    first = await case.source.first_candle_ms(case.symbol, "1h", since)
    want = case.truth("1h", since, NOW)
    assert first == want[0]


async def test_the_history_horizon_clips_ranges_and_probes(case: Case) -> None:
    src = case.source
    src.caps = dataclasses.replace(src.caps, history_limit=10)
    horizon = src.horizon_ms("1h")
    assert horizon == parse_timeframe("1h").floor(NOW) - 9 * HOUR_MS
    got = await src.fetch_candles(case.symbol, "1h", NOW - 30 * 24 * HOUR_MS, NOW)
    assert _ts(got) == case.truth("1h", horizon, NOW)
    assert await src.first_candle_ms(case.symbol, "1h", 0) == case.truth("1h", horizon,
                                                                          NOW)[0]


async def test_a_wrong_symbol_or_timeframe_is_a_clear_error(case: Case) -> None:
    typo = case.symbol.replace("BTC", "BTX")
    with pytest.raises(SourceError, match=f"no market '{typo}'; did you mean"):
        await case.source.fetch_candles(typo, "1h", NOW - HOUR_MS * 5, NOW)
    with pytest.raises(SourceError, match="timeframe"):
        await case.source.fetch_candles(case.symbol, "7m", NOW - HOUR_MS * 5, NOW)
    assert case.symbol in await case.source.markets()
