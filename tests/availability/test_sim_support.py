"""What the sim does for the tracker: delisted markets (SETTLING, then gone from
exchangeInfo, archive files stopping at the delisting), HTTP 451 on exchangeInfo, and
HEADs answered from remembered sizes without building a ZIP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import SimServerApp, run_in_thread
from tests.availability.tracker_sim import DELISTINGS, NOW, SYMBOLS, key


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    ex = SimExchange(7, SYMBOLS, clock=FakeClock(NOW), transient=None, delistings=DELISTINGS)
    with run_in_thread(ex) as url, httpx.Client(base_url=url) as client:
        yield client


def test_exchange_info_shows_delisted_markets_settling_until_dropped(
        http: httpx.Client) -> None:
    info = {s["symbol"]: s for s in http.get("/fapi/v1/exchangeInfo").json()["symbols"]}
    assert "GONEUSDT" not in info  # dropped: only the archive knows it
    assert info["OLDUSDT"]["status"] == "SETTLING"
    assert info["OLDUSDT"]["deliveryDate"] == to_ms("2025-02-15")
    assert info["BTCUSDT"]["status"] == "TRADING"
    spot = {s["symbol"]: s["status"] for s in http.get("/api/v3/exchangeInfo").json()["symbols"]}
    assert spot["OLDUSDT"] == "BREAK" and "GONEUSDT" not in spot


def test_no_candles_or_files_after_the_delisting(http: httpx.Client) -> None:
    klines = http.get("/fapi/v1/klines", params={
        "symbol": "OLDUSDT", "interval": "1h", "startTime": to_ms("2025-02-14T20:00:00Z"),
        "limit": 100}).json()
    assert [row[0] for row in klines][-1] == to_ms("2025-02-14T23:00:00Z")
    gone = http.get("/fapi/v1/klines", params={"symbol": "GONEUSDT", "interval": "1h"})
    assert gone.status_code == 400 and gone.json()["code"] == -1121
    assert http.head(f"/{key('OLDUSDT', '2025-02-14')}.zip").status_code == 200
    assert http.head(f"/{key('OLDUSDT', '2025-02-15')}.zip").status_code == 404
    assert http.head(f"/{key('GONEUSDT', '2025-02-17')}.zip").status_code == 200
    assert http.head(f"/{key('GONEUSDT', '2025-02-18')}.zip").status_code == 404


def asgi(sim: SimServerApp) -> httpx.AsyncClient:
    """The sim's app called in-process (its internals are what the test looks at)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim")


async def test_forced_451_is_binances_geo_block() -> None:
    app_ex = SimExchange(7, SYMBOLS, clock=FakeClock(NOW), delistings=DELISTINGS)
    app_ex.force("451", 1, endpoint="exchangeInfo")
    async with asgi(SimServerApp(app_ex)) as client:
        blocked = await client.get("/fapi/v1/exchangeInfo")
        assert blocked.status_code == 451
        assert blocked.json()["code"] == 0 and "restricted location" in blocked.json()["msg"]
        assert (await client.get("/fapi/v1/exchangeInfo")).status_code == 200  # once


async def test_head_answers_from_the_remembered_size_without_building() -> None:
    ex = SimExchange(7, SYMBOLS, clock=FakeClock(NOW), transient=None, delistings=DELISTINGS)
    truncated = key("ETHUSDT", "2025-02-26", "1m")
    sim = SimServerApp(ex, ArchiveSpec(faults=(ArchiveFault(FaultKind.TRUNCATED, truncated),
                                               )))
    path = f"/{key('BTCUSDT', '2025-02-27', '1m')}.zip"
    async with asgi(sim) as client:
        first = await client.head(path)  # builds the file once to learn its size
        sim.archive._cache.clear()
        again = await client.head(path)
        assert not sim.archive._cache, "a HEAD of a file of known size built it again"
        assert again.headers["content-length"] == first.headers["content-length"]
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["last-modified"] == "Fri, 28 Feb 2025 00:00:00 GMT"
        body = (await client.get(path)).content
        assert int(first.headers["content-length"]) == len(body) and again.content == b""
        # a HEAD transfers no body: a cut transfer does not apply, nor is it used up
        head = await client.head(f"/{truncated}.zip")
        got = (await client.get(f"/{truncated}.zip")).content
        assert int(head.headers["content-length"]) == 2 * len(got) or \
            int(head.headers["content-length"]) == 2 * len(got) + 1
