"""``provider_degraded`` alerts: a providers_health run that finds a source down fires once
(across two engines on one state DB, and within ``repeat_every``), and its recovery is
announced once, to a real webhook on loopback."""

from __future__ import annotations

import pytest

from candlekeep.alerts.engine import AlertEngine
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.scheduler.manual import run_now
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from candlekeep.state.statuses import RunStatus
from tests.alerts.conftest import HttpServer
from tests.alerts.test_alerts import (  # noqa: F401 - make is a fixture
    DAY,
    NOW,
    H,
    Make,
    hook,
    make,
    posted,
)


async def test_a_down_provider_fires_once_and_recovers_once(
        make: Make, http_server: HttpServer) -> None:  # noqa: F811
    clock = FakeClock(NOW)
    ex = SimExchange(7, clock=clock)
    src = SimSource("sim", exchange=ex, clock=clock, max_attempts=1)
    raw = {"sources": {"sim": {"type": "sim", "seed": 7}},
           "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
           "series": [{"source": "sim", "symbols": ["BTC/USDT"], "timeframes": ["1m"],
                       "start": NOW // DAY * DAY}],
           "jobs": [{"name": "providers", "type": "providers_health"}],
           "alerts": {"channels": {"hook": hook(http_server)},
                      "rules": [{"on": "provider_degraded", "channels": ["hook"],
                                 "repeat_every": "6h"}]}}
    rt, specs = make(clock, raw, node="n1", sources={"sim": src})
    other, _ = make(clock, raw, node="n2")
    spec = specs["providers"]

    ex.force("503", 5)
    for _ in range(5):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - H, NOW)
    out = await run_now(rt, spec)
    assert out.status is RunStatus.SUCCESS  # a provider down is reported, not a failure
    (fired,) = posted(http_server)
    assert fired["state"] == "firing" and fired["title"] == "provider sim is down"
    assert [a["key"] for a in fired["alerts"]] == ["provider_degraded:sim"]
    assert fired["alerts"][0]["subject"]["status"] == "down"
    assert "circuit open" in fired["text"] and "candlekeep providers" in fired["text"]

    # Another node told of the same run, and a check again within repeat_every: silent.
    await AlertEngine.for_runtime(other).after_run(out, spec)
    await run_now(rt, spec)
    assert len(posted(http_server)) == 1

    until = src.circuit.snapshot().until_ms
    assert until is not None
    clock.set(until)  # cool-down over: the first probe half-opens it (still degraded)
    await run_now(rt, spec)
    assert len(posted(http_server)) == 1
    clock.set(until + 1)
    await run_now(rt, spec)  # the second probe closes it: up again
    recovered = posted(http_server)[1]
    assert recovered["state"] == "resolved"
    assert recovered["title"] == "provider sim is up again"
    await run_now(rt, spec)
    assert len(posted(http_server)) == 2  # one recovery
