"""A simulated Binance on loopback, shared by a test module; its clock never moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, Hole, SimExchange
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2025-01-01T12:00:30Z")
DAY = to_ms("2024-06-01")
EXPLICIT_HOLE = Hole(DAY + 100 * MINUTE_MS, DAY + 110 * MINUTE_MS, "BTC/USDT")
UNLIMITED = Faults(weight_limit=10**9, fapi_weight_limit=10**9)


@pytest.fixture(scope="module")
def shared_sim() -> SimExchange:
    """Exchange holes on, late data off (so one fetch is complete), no rate limit."""
    return SimExchange(7, clock=FakeClock(NOW), transient=None, faults=UNLIMITED,
                       extra_holes=[EXPLICIT_HOLE])


@pytest.fixture(scope="module")
def sim_url(shared_sim: SimExchange) -> Iterator[str]:
    with run_in_thread(shared_sim) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "shared_sim" in request.fixturenames:
        request.getfixturevalue("shared_sim").clear_forced()
