"""``premove`` alerts: a pre-movement scan whose gates alert on symbols fires once per
symbol (not again within ``repeat_every``), and announces once when a later run scores
them quiet; to a real webhook on loopback, over data backfilled from the in-process sim."""

from __future__ import annotations

from typing import Any

from candlekeep.core.clock import FakeClock
from candlekeep.scheduler.manual import run_now
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from candlekeep.state.statuses import RunStatus
from tests.alerts.conftest import HttpServer
from tests.alerts.test_alerts import (  # noqa: F401 - make is a fixture
    NOW,
    H,
    Make,
    hook,
    make,
    posted,
)
from tests.jobs.test_pipeline import run

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def config(http_server: HttpServer, premove: dict[str, Any]) -> dict[str, Any]:
    return {"sources": {"sim": {"type": "sim", "seed": 7}},
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "series": [{"source": "sim", "symbols": SYMBOLS, "timeframes": ["1h"],
                        "start": NOW - 4 * 24 * H}],
            "universes": {"majors": {"source": "sim", "symbols": SYMBOLS}},
            "scans": {"premove": premove},
            "jobs": [{"name": "pm", "type": "scan",
                      "params": {"profile": "premove", "universe": "majors"}}],
            "alerts": {"channels": {"hook": hook(http_server)},
                       "rules": [{"on": "premove", "channels": ["hook"],
                                  "repeat_every": "6h"}]}}


async def test_premove_fires_per_symbol_once_and_announces_the_end_once(
        make: Make, http_server: HttpServer) -> None:  # noqa: F811
    clock = FakeClock(NOW)  # the run path's heartbeats must not see time jump
    ex = SimExchange(7, {s: "2017-08-17" for s in SYMBOLS}, clock=FakeClock(NOW),
                     holes=None, transient=None)
    src = SimSource("sim", exchange=ex, clock=clock)
    # Squeeze and accumulation open to every scored symbol, one gate of three needed.
    loose = {"squeeze_quality": 0, "squeeze_max_depth_usd": 1e12,
             "accumulation_volume": 0, "accumulation_momentum": 0, "needed": 1}
    rt, specs = make(clock, config(http_server, loose), sources={"sim": src})
    assert (await run(rt, "backfill")).ok
    assert (await run(rt, "orderbook", universe="majors")).ok
    out = await run_now(rt, specs["pm"])
    assert out.status is RunStatus.SUCCESS
    (fired,) = posted(http_server)
    assert fired["state"] == "firing" and fired["title"].startswith("pre-movement alert: ")
    assert "found at least 1 of 3 gates passing" in fired["text"]
    assert sorted(a["key"] for a in fired["alerts"]) == sorted(
        f"premove:majors:{s}" for s in SYMBOLS)
    assert all(a["subject"]["artifacts"] for a in fired["alerts"])

    await run_now(rt, specs["pm"])  # still alerting, within repeat_every: silent
    assert len(posted(http_server)) == 1

    # Gates no symbol can pass: quiet now, so the alert is over, said once.
    # (two needed: the missing funding gate alone cannot decide, so they are quiet)
    strict = {**loose, "accumulation_volume": 101, "squeeze_quality": 101, "needed": 2}
    other, other_specs = make(clock, config(http_server, strict), node="n2",
                              sources={"sim": src})
    await run_now(other, other_specs["pm"])
    over = posted(http_server)[1]
    assert over["state"] == "resolved" and over["title"].startswith("pre-movement alert over")
    await run_now(other, other_specs["pm"])
    assert len(posted(http_server)) == 2
