"""An adaptive CCXT source against a sim that enforces 1/20 of the budget it advertises.

Real time over real HTTP, with the sim's window shortened to two seconds (and the limiter
given the sim's advertised figures for that window, as CcxtSource takes Binance's per
minute from capabilities): every request, reply and window happens as it would against
the exchange, only thirty times faster. A FakeClock that moves on every sleep would not do:
concurrent page fetches each moving it forward compound into a timeline the server and
the limiter do not share. Counts are asserted, never timings.
"""

from __future__ import annotations

from candlekeep.core.clock import SystemClock
from candlekeep.core.timeframes import DAY_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.ccxt_source import CcxtSource
from candlekeep.sources.ratelimit import WeightLimiter

START = to_ms("2024-01-01")
WINDOW_S = 2.0
ADVERTISED, ENFORCED = 6000, 300


async def backfill(days: int, *, adaptive: bool) -> tuple[SimExchange, CcxtSource, int]:
    clock = SystemClock()
    sim = SimExchange(7, clock=clock, transient=None, holes=None,
                      faults=Faults(weight_limit=ADVERTISED, enforced_weight_limit=ENFORCED,
                                    window_s=WINDOW_S))
    with run_in_thread(sim) as url:
        limiter = WeightLimiter(ADVERTISED if adaptive else ENFORCED, WINDOW_S, clock=clock,
                                adaptive=adaptive, name="binance")
        src = CcxtSource("binance", "binance", base_url=url, clock=clock, limiter=limiter)
        try:
            await src.markets()
            got = await src.fetch_candles("BTC/USDT", "1m", START, START + days * DAY_MS)
        finally:
            await src.close()
    return sim, src, got.num_rows


async def test_a_backfill_finds_the_true_budget_with_few_429s_and_no_418() -> None:
    sim, src, rows = await backfill(200, adaptive=True)  # 289 requests, ~4 s at the wall
    snap = src.limiter.snapshot()
    assert rows == 200 * 1440  # complete: every 429 was waited out and retried
    assert sim.banned == 0 and snap.banned == 0
    assert 1 <= sim.rate_limited <= 3 and snap.rate_limited == sim.rate_limited
    assert snap.adaptive and snap.advertised_budget == ADVERTISED
    assert 1 <= snap.cuts <= 2 and snap.effective_budget <= ENFORCED  # found the wall


async def test_a_configured_budget_stays_fixed_and_meets_no_429() -> None:
    sim, src, rows = await backfill(100, adaptive=False)
    snap = src.limiter.snapshot()
    assert rows == 100 * 1440
    assert sim.rate_limited == 0 and sim.banned == 0
    assert not snap.adaptive and snap.effective_budget == ENFORCED and snap.cuts == 0
