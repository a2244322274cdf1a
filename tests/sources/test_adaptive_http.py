"""An adaptive CCXT source against a sim that enforces 1/20 of the budget it advertises.

The sim and the source share one FakeClock that moves forward whenever the source sleeps
(a pause, a wait for budget, a retry's backoff): the windows the sim counts and the ones the
limiter keeps are the same minutes, and nothing sleeps for real.
"""

from __future__ import annotations

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.ccxt_source import CcxtSource

START = to_ms("2024-01-01")


async def test_a_backfill_finds_the_true_budget_with_few_429s_and_no_418() -> None:
    clock = FakeClock(to_ms("2025-01-01T12:00:30Z"), autoadvance=True)
    sim = SimExchange(7, clock=clock, transient=None, holes=None,
                      faults=Faults(weight_limit=6000, enforced_weight_limit=300))
    with run_in_thread(sim) as url:
        src = CcxtSource("binance", "binance", base_url=url, clock=clock)
        try:
            await src.markets()
            got = await src.fetch_candles("BTC/USDT", "1m", START, START + 250 * DAY_MS)
        finally:
            await src.close()
    snap = src.limiter.snapshot()
    assert got.num_rows == 250 * 1440  # complete: every 429 was waited out and retried
    assert sim.banned == 0 and snap.banned == 0
    assert 1 <= sim.rate_limited <= 3 and snap.rate_limited == sim.rate_limited
    assert snap.adaptive and snap.advertised_budget == 6000
    assert snap.cuts >= 1 and snap.effective_budget <= 300  # found the wall, stays near it


async def test_a_configured_budget_stays_fixed_and_meets_no_429() -> None:
    clock = FakeClock(to_ms("2025-01-01T12:00:30Z"), autoadvance=True)
    sim = SimExchange(7, clock=clock, transient=None, holes=None,
                      faults=Faults(weight_limit=6000, enforced_weight_limit=300))
    with run_in_thread(sim) as url:
        src = CcxtSource("binance", "binance", base_url=url, clock=clock,
                         rate_limit=(300, 60.0))
        try:
            await src.markets()
            got = await src.fetch_candles("BTC/USDT", "1m", START, START + 100 * DAY_MS)
        finally:
            await src.close()
    snap = src.limiter.snapshot()
    assert got.num_rows == 100 * 1440
    assert sim.rate_limited == 0 and sim.banned == 0
    assert not snap.adaptive and snap.effective_budget == 300 and snap.cuts == 0
