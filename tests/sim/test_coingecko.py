"""The sim's CoinGecko over real HTTP: routes, granularity rules, keys, budgets, faults.

The exchange clock is a FakeClock: "now", the rate-limit window and the outage only move
when a test moves them. Expected values come from the sim's truth functions, and those
are checked once against the candle generator itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.coingecko.app import CoinGeckoSim
from candlekeep.sim.coingecko.spec import (
    FOUR_DAYS_MS,
    FOUR_HOURS_MS,
    THIRTY_MIN_MS,
    CoinGeckoSpec,
    KeySpec,
    ohlc_candle_ms,
    range_granularity,
)
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2025-01-15T12:07:13.250Z")
NOW_S = NOW // 1000
DEMO = {"x-cg-demo-api-key": "CG-demo-key"}
PRO = {"x-cg-pro-api-key": "CG-pro-key"}
KEYS = (KeySpec("CG-demo-key", "demo"), KeySpec("CG-pro-key", "analyst"),
        KeySpec("CG-ent-key", "enterprise"),
        KeySpec("CG-shared-key", "basic", enforced_per_minute=5))

_MINUTES = itertools.count(1)


def make(spec: CoinGeckoSpec | None = None) -> CoinGeckoSim:
    ex = SimExchange(7, clock=FakeClock(NOW), holes=None, transient=None)
    return CoinGeckoSim(ex, spec or CoinGeckoSpec(keys=KEYS))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[CoinGeckoSim, str]]:
    cg = make()
    with run_in_thread(cg.exchange, coingecko=cg) as url:
        yield cg, url


@pytest.fixture
def cg(served: tuple[CoinGeckoSim, str]) -> Iterator[CoinGeckoSim]:
    sim = served[0]
    clock = sim.clock
    assert isinstance(clock, FakeClock)
    # A fresh minute for every test, so budgets left over from another test never count.
    clock.set(NOW + next(_MINUTES) * 60_000)
    yield sim
    sim.up()


@pytest.fixture
def demo(served: tuple[CoinGeckoSim, str], cg: CoinGeckoSim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=CoinGeckoSim.base_url(served[1], "demo"), headers=DEMO) as c:
        yield c


@pytest.fixture
def pro(served: tuple[CoinGeckoSim, str], cg: CoinGeckoSim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=CoinGeckoSim.base_url(served[1], "pro"), headers=PRO) as c:
        yield c


def now(cg: CoinGeckoSim) -> int:
    return cg.now_ms()


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def chart(c: httpx.Client, from_s: float, to_s: float, coin: str = "bitcoin",
          **extra: Any) -> httpx.Response:
    return c.get(f"/coins/{coin}/market_chart/range",
                 params={"vs_currency": "usd", "from": from_s, "to": to_s, **extra})


def ohlc(c: httpx.Client, days: int | str, coin: str = "bitcoin", **extra: Any) -> httpx.Response:
    return c.get(f"/coins/{coin}/ohlc", params={"vs_currency": "usd", "days": days, **extra})


# ---------------------------------------------------------------- simple routes


def test_ping_and_coin_list_with_an_ambiguous_symbol(demo: httpx.Client) -> None:
    assert ok(demo.get("/ping")) == {"gecko_says": "(V3) To the Moon!"}
    coins = ok(demo.get("/coins/list"))
    assert {"id": "bitcoin", "symbol": "btc", "name": "Bitcoin"} in coins
    eth = sorted(c["id"] for c in coins if c["symbol"] == "eth")
    assert eth == ["ethereum", "ethereum-wormhole"]
    assert all(c["platforms"] == {} for c in ok(demo.get("/coins/list",
                                                          params={"include_platform": "true"})))


def test_binance_routes_are_untouched(served: tuple[CoinGeckoSim, str]) -> None:
    r = httpx.get(served[1] + "/api/v3/ping")
    assert r.status_code == 200 and r.json() == {}


# ---------------------------------------------------------------- OHLC


@pytest.mark.parametrize(("days", "width", "count"), [
    (1, THIRTY_MIN_MS, 48), (7, FOUR_HOURS_MS, 42), (14, FOUR_HOURS_MS, 84),
    (30, FOUR_HOURS_MS, 180), (90, FOUR_DAYS_MS, None)])
def test_ohlc_candle_body_follows_days(cg: CoinGeckoSim, demo: httpx.Client, days: int,
                                       width: int, count: int | None) -> None:
    rows = ok(ohlc(demo, days))
    assert ohlc_candle_ms(days) == width
    closes = np.array([r[0] for r in rows])
    assert all(len(r) == 5 for r in rows)  # close time, O, H, L, C: no volume
    assert count is None or len(rows) == count
    assert (np.diff(closes) == width).all() and (closes % width == 0).all()
    assert closes[-1] <= now(cg) < closes[-1] + width  # closed candles only, the newest
    assert closes[0] > now(cg) - days * DAY_MS >= closes[0] - width  # the oldest in range
    truth = cg.ohlc("bitcoin", days)
    assert rows == [list(r) for r in zip(truth.close_ts.tolist(), truth.open.tolist(),
                                         truth.high.tolist(), truth.low.tolist(),
                                         truth.close.tolist(), strict=True)]


def test_ohlc_truth_is_the_generator_candle_stamped_with_its_close(cg: CoinGeckoSim) -> None:
    gen, series = cg.exchange.generator, "BTC/USD"
    c30 = cg.ohlc("bitcoin", 1)
    a = gen.arrays(series, "30m", c30.close_ts - THIRTY_MIN_MS)
    assert np.array_equal(c30.open, a.open) and np.array_equal(c30.high, a.high)
    c4d = cg.ohlc("bitcoin", 90)
    first_open = int(c4d.close_ts[0]) - FOUR_DAYS_MS
    d = gen.arrays(series, "1d", np.arange(first_open, first_open + FOUR_DAYS_MS, DAY_MS))
    assert c4d.open[0] == d.open[0] and c4d.close[0] == d.close[-1]
    assert c4d.high[0] == d.high.max() and c4d.low[0] == d.low.min()


def test_ohlc_paid_intervals_and_their_days(cg: CoinGeckoSim, demo: httpx.Client,
                                            pro: httpx.Client) -> None:
    hourly = ok(ohlc(pro, 7, interval="hourly"))
    assert len(hourly) == 7 * 24 and hourly[1][0] - hourly[0][0] == HOUR_MS
    daily = ok(ohlc(pro, 14, interval="daily"))
    assert len(daily) == 14 and all(r[0] % DAY_MS == 0 for r in daily)
    r = ohlc(pro, 365, interval="daily")
    assert r.status_code == 400 and "1/7/14/30/90/180" in r.json()["error"]
    r = ohlc(demo, 7, interval="hourly")
    assert r.status_code == 401 and r.json()["status"]["error_code"] == 10005


def test_demo_history_stops_at_365_days(cg: CoinGeckoSim, demo: httpx.Client,
                                        pro: httpx.Client) -> None:
    assert len(ok(ohlc(demo, 365))) > 0
    r = ohlc(demo, "max")  # as recorded in SixPM-Software/waxtax#8
    assert r.status_code == 401
    assert r.json()["error"]["status"]["error_code"] == 10012
    assert len(ok(ohlc(pro, "max"))) > 0
    t = now(cg) // 1000
    r = chart(demo, t - 366 * 86400, t - 300 * 86400)
    assert r.status_code == 401 and r.json()["error"]["status"]["error_code"] == 10012


# ---------------------------------------------------------------- market_chart/range


def test_range_five_minutely_within_the_last_day(cg: CoinGeckoSim, demo: httpx.Client) -> None:
    t = now(cg) / 1000
    body = ok(chart(demo, t - 86400, t))
    ts = np.array([p[0] for p in body["prices"]])
    assert range_granularity(now(cg) - DAY_MS, now(cg), now(cg)) == "5m"
    assert ts[0] >= (t - 86400) * 1000 and ts[-1] == now(cg)  # ms in the reply
    gaps = np.diff(ts[:-1])
    assert ((gaps > 4 * MINUTE_MS) & (gaps < 6 * MINUTE_MS)).all()
    assert (ts % MINUTE_MS != 0).any()  # not on round minutes, as CoinGecko's are not
    assert len(ts) in (288, 289, 290)
    truth = cg.chart("bitcoin", t - 86400, t)
    assert [p[0] for p in body["market_caps"]] == truth.ts.tolist()
    assert [p[1] for p in body["total_volumes"]] == truth.total_volumes.tolist()


def test_range_a_day_that_is_not_the_last_one_is_hourly(cg: CoinGeckoSim,
                                                         demo: httpx.Client) -> None:
    t = now(cg) // 1000
    for lo, hi in ((t - 86400 - 1, t), (t - 3 * 86400, t - 2 * 86400)):
        ts = np.array([p[0] for p in ok(chart(demo, lo, hi))["prices"]])
        gaps = np.diff(ts[:-1] if hi == t else ts)
        assert ((gaps > 59 * MINUTE_MS) & (gaps < 61 * MINUTE_MS)).all(), (lo, hi)
        assert 22 <= len(gaps) <= 25
        assert ts.tolist() == cg.chart("bitcoin", lo, hi).ts.tolist()
        assert ts[-1] == t * 1000 if hi == t else ts[-1] < hi * 1000


def test_range_hourly_up_to_90_days_daily_above(cg: CoinGeckoSim, pro: httpx.Client) -> None:
    t = now(cg) // 1000
    hourly = ok(chart(pro, t - 90 * 86400, t))["prices"]
    assert 90 * 24 - 1 <= len(hourly) <= 90 * 24 + 2
    daily = ok(chart(pro, t - 90 * 86400 - 1, t))["prices"]
    ts = [p[0] for p in daily]
    assert all(x % DAY_MS == 0 for x in ts[:-1]) and ts[-1] == t * 1000  # 00:00 UTC, then now
    assert len(ts) == 91
    old = ok(chart(pro, to_ms("2024-01-01") // 1000, to_ms("2024-06-01") // 1000))["prices"]
    assert [p[0] for p in old][:2] == [to_ms("2024-01-01"), to_ms("2024-01-02")]
    assert old[-1][0] == to_ms("2024-06-01")  # a past range has no "now" point


def test_range_accepts_iso_dates_and_volumes_are_rolling_24h(cg: CoinGeckoSim,
                                                              pro: httpx.Client) -> None:
    body = ok(chart(pro, "2024-03-01", "2024-03-02"))  # type: ignore[arg-type]
    ts = [p[0] for p in body["total_volumes"]]
    assert to_ms("2024-03-01") <= ts[0] < to_ms("2024-03-01") + HOUR_MS
    point = ts[5]
    hour = point // HOUR_MS * HOUR_MS
    gen = cg.exchange.generator.arrays("BTC/USD", "1h",
                                       np.arange(hour - DAY_MS, hour, HOUR_MS))
    assert body["total_volumes"][5][1] == pytest.approx(gen.quote_volume.sum(), abs=0.01)
    price = cg.exchange.generator.price_at("BTC/USD", np.array([point // MINUTE_MS * MINUTE_MS]))
    assert body["prices"][5][1] == price[0]
    assert body["market_caps"][5][1] == pytest.approx(price[0] * 19_700_000.0)


def test_range_intervals_are_for_enterprise(cg: CoinGeckoSim, served: tuple[CoinGeckoSim, str],
                                            pro: httpx.Client) -> None:
    t = now(cg) // 1000
    r = chart(pro, t - 5 * 86400, t, interval="hourly")
    assert r.status_code == 401 and r.json()["status"]["error_code"] == 10005
    daily = ok(chart(pro, t - 5 * 86400, t, interval="daily"))["prices"]
    assert all(p[0] % DAY_MS == 0 for p in daily[:-1])
    ent = {"x-cg-pro-api-key": "CG-ent-key"}
    base = CoinGeckoSim.base_url(served[1], "pro")
    url = base + "/coins/bitcoin/market_chart/range"
    five = httpx.get(url, headers=ent, params={"vs_currency": "usd", "from": t - 3 * 86400,
                                               "to": t - 2 * 86400, "interval": "5m"})
    assert len(ok(five)["prices"]) == 288
    too_long = httpx.get(url, headers=ent, params={"vs_currency": "usd", "interval": "5m",
                                                   "from": t - 11 * 86400, "to": t})
    assert too_long.status_code == 400


def test_request_errors(demo: httpx.Client) -> None:
    r = ohlc(demo, 1, coin="no-such-coin")
    assert (r.status_code, r.json()) == (404, {"error": "coin not found"})
    r = demo.get("/coins/bitcoin/ohlc", params={"days": 1})
    assert (r.status_code, r.json()) == (400, {"error": "Missing parameter vs_currency"})
    r = demo.get("/coins/bitcoin/market_chart/range", params={"vs_currency": "usd", "to": 1})
    assert (r.status_code, r.json()) == (400, {"error": "Missing parameter from"})
    assert ohlc(demo, "soon").status_code == 400


@pytest.mark.parametrize("days", [0, 2, 3, 5, 31, 50, 364])
def test_ohlc_refuses_days_coingecko_does_not_document(demo: httpx.Client, days: int) -> None:
    r = ohlc(demo, days)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid days: use 1/7/14/30/90/180/365/max"}


# ---------------------------------------------------------------- keys and hosts


def test_keys_and_hosts(served: tuple[CoinGeckoSim, str], cg: CoinGeckoSim) -> None:
    demo_url = CoinGeckoSim.base_url(served[1], "demo") + "/ping"
    pro_url = CoinGeckoSim.base_url(served[1], "pro") + "/ping"
    assert httpx.get(pro_url, headers=PRO).status_code == 200
    assert httpx.get(pro_url, params={"x_cg_pro_api_key": "CG-pro-key"}).status_code == 200
    assert httpx.get(demo_url, params={"x_cg_demo_api_key": "CG-demo-key"}).status_code == 200

    def err(r: httpx.Response) -> tuple[int, int]:
        body = r.json()
        return r.status_code, body.get("error_code") or body["status"]["error_code"]

    assert err(httpx.get(pro_url)) == (401, 10002)
    assert "API Key Missing" in httpx.get(pro_url).json()["status"]["error_message"]
    assert err(httpx.get(pro_url, headers={"x-cg-pro-api-key": "CG-nope"})) == (401, 10002)
    assert err(httpx.get(pro_url, headers=DEMO)) == (400, 10011)
    assert err(httpx.get(pro_url, headers={"x-cg-pro-api-key": "CG-demo-key"})) == (400, 10011)
    assert err(httpx.get(demo_url, headers=PRO)) == (400, 10010)
    assert err(httpx.get(demo_url, headers={"x-cg-demo-api-key": "CG-pro-key"})) == (400, 10010)
    assert err(httpx.get(demo_url, headers={"x-cg-demo-api-key": "CG-nope"})) == (401, 10002)
    keyless = httpx.get(demo_url)
    assert keyless.status_code == 200 and keyless.headers["x-ratelimit-limit"] == "5"


def test_keyless_calls_can_be_refused() -> None:
    cg = make(CoinGeckoSpec(keys=KEYS, keyless_per_minute=None))
    with run_in_thread(cg.exchange, coingecko=cg) as url:
        r = httpx.get(CoinGeckoSim.base_url(url, "demo") + "/ping")
    assert r.status_code == 401 and r.json()["status"]["error_code"] == 10002


# ---------------------------------------------------------------- budgets


def test_429_at_the_plan_budget_then_the_next_minute(cg: CoinGeckoSim,
                                                     demo: httpx.Client) -> None:
    replies = [demo.get("/ping") for _ in range(31)]
    assert [r.status_code for r in replies[:30]] == [200] * 30
    last = replies[30]
    assert last.status_code == 429
    assert last.json() == {"status": {"error_code": 429, "error_message": (
        "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing"
        " to subscribe to our API plans for higher rate limits.")}}
    assert replies[29].headers["x-ratelimit-remaining"] == "0"
    assert last.headers["x-ratelimit-limit"] == "30"
    window_end = (now(cg) // 60_000 + 1) * 60_000
    assert int(last.headers["retry-after"]) == -(-(window_end - now(cg)) // 1000)
    assert cg.used("CG-demo-key") == 30  # the 429 cost nothing
    clock = cg.clock
    assert isinstance(clock, FakeClock)
    clock.set(window_end)
    assert demo.get("/ping").status_code == 200


def test_enforced_budget_smaller_than_advertised(cg: CoinGeckoSim,
                                                 served: tuple[CoinGeckoSim, str]) -> None:
    url = CoinGeckoSim.base_url(served[1], "pro") + "/ping"
    key = {"x-cg-pro-api-key": "CG-shared-key"}
    replies = [httpx.get(url, headers=key) for _ in range(6)]
    assert [r.status_code for r in replies] == [200] * 5 + [429]
    # The headers still promise Basic's 250 a minute: the 429 comes "within budget".
    assert replies[4].headers["x-ratelimit-limit"] == "250"
    assert replies[5].headers["x-ratelimit-remaining"] == "245"


# ---------------------------------------------------------------- faults


def test_down_for_answers_503_until_the_clock_passes(cg: CoinGeckoSim,
                                                     demo: httpx.Client) -> None:
    clock = cg.clock
    assert isinstance(clock, FakeClock)
    cg.down_for(120)
    start = now(cg)
    for _ in range(3):
        r = demo.get("/ping")
        assert r.status_code == 503 and "Service Unavailable" in r.text
    assert cg.used("CG-demo-key") == 0  # an outage counts against nothing
    clock.set(start + 119_999)
    assert demo.get("/ping").status_code == 503
    clock.set(start + 120_000)
    assert demo.get("/ping").status_code == 200


def test_forced_faults(cg: CoinGeckoSim, demo: httpx.Client) -> None:
    cg.force("lag", endpoint="ohlc", points=3)
    assert ok(ohlc(demo, 1)) == ok(ohlc(demo, 1))[:-3]  # a lagging reply, then a full one
    cg.force("502", endpoint="ohlc")
    assert demo.get("/ping").status_code == 200  # only ohlc was targeted
    assert ohlc(demo, 1).status_code == 502
    assert ohlc(demo, 1).status_code == 200
    cg.force("truncate")
    r = ohlc(demo, 1)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    cg.force("slow", delay_s=0.01)
    assert ok(demo.get("/ping")) == {"gecko_says": "(V3) To the Moon!"}
