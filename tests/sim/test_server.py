"""The simulated exchange: its model (holes, late data, listings, admission) and its HTTP face.

The exchange's clock is a FakeClock, so rate-limit windows and "now" never move by
themselves: every count below is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, Hole, HoleSpec, SimExchange, TransientSpec
from candlekeep.sim.generator import CandleGenerator
from candlekeep.sim.server import build_exchange, run_in_thread

NOW = to_ms("2025-01-01T12:00:30Z")
DAY = to_ms("2024-06-01")


def make(**kwargs: object) -> SimExchange:
    kwargs.setdefault("clock", FakeClock(NOW))
    return SimExchange(7, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the model


def test_klines_follow_binance_range_semantics() -> None:
    ex = make(holes=None, transient=None)
    a = ex.klines("BTC/USDT", "1m", DAY, DAY + 10 * MINUTE_MS, 1000)
    assert a.ts.tolist() == [DAY + i * MINUTE_MS for i in range(11)]  # both ends inclusive
    a = ex.klines("BTC/USDT", "1m", DAY + 1, None, 5)
    assert a.ts[0] == DAY + MINUTE_MS and len(a) == 5  # startTime rounds up to the grid
    newest = ex.klines("BTC/USDT", "1h", None, None, 3)
    current = NOW - NOW % HOUR_MS
    assert newest.ts.tolist() == [current - 2 * HOUR_MS, current - HOUR_MS, current]
    ending = ex.klines("BTC/USDT", "1h", None, DAY, 2)
    assert ending.ts.tolist() == [DAY - HOUR_MS, DAY]


def test_no_candles_before_listing() -> None:
    listing = to_ms("2024-05-01T10:30:00Z")
    ex = make(symbols={"NEW/USDT": listing}, holes=None, transient=None)
    a = ex.klines("NEW/USDT", "1h", listing - DAY, None, 5)
    assert a.ts[0] == to_ms("2024-05-01T10:00:00Z")  # the candle holding the listing
    assert len(ex.klines("NEW/USDT", "1d", None, listing - 2 * DAY, 10)) == 0


def test_holes_are_pure_and_swallow_only_contained_candles() -> None:
    ex = make(holes=HoleSpec(probability=1.0, min_minutes=20, max_minutes=20), transient=None)
    ts = np.arange(DAY, DAY + 3 * DAY_MS, MINUTE_MS, dtype=np.int64)
    mask = ex.hole_mask("ETH/USDT", "1m", ts)
    assert mask.sum() == 3 * 20  # one 20-minute hole per day
    assert (make(holes=HoleSpec(min_minutes=20, max_minutes=20)).hole_mask(
        "ETH/USDT", "1m", ts) == mask).all()
    # a 1h candle only disappears if the whole hour is inside the hole: never here
    hours = np.arange(DAY, DAY + 3 * DAY_MS, HOUR_MS, dtype=np.int64)
    assert not ex.hole_mask("ETH/USDT", "1h", hours).any()
    # 5m candles inside the hole are gone, those straddling its edges are not
    fives = np.arange(DAY, DAY + 3 * DAY_MS, 5 * MINUTE_MS, dtype=np.int64)
    assert 3 * 3 <= ex.hole_mask("ETH/USDT", "5m", fives).sum() <= 3 * 4


def test_explicit_hole_and_klines_skip_it() -> None:
    hole = Hole(DAY + 10 * MINUTE_MS, DAY + 15 * MINUTE_MS, "BTC/USDT")
    ex = make(holes=None, transient=None, extra_holes=[hole])
    got = ex.klines("BTC/USDT", "1m", DAY, DAY + 30 * MINUTE_MS - 1, 1000).ts.tolist()
    assert len(got) == 25
    assert all(not (hole.start_ms <= t < hole.end_ms) for t in got)
    assert len(ex.klines("ETH/USDT", "1m", DAY, DAY + 30 * MINUTE_MS - 1, 1000)) == 30
    # limit counts existing candles: the reply reaches past the hole to fill it
    assert len(ex.klines("BTC/USDT", "1m", DAY, None, 20)) == 20


def test_late_candles_miss_the_first_reply_only() -> None:
    ex = make(holes=None, transient=TransientSpec(probability=1.0, min_minutes=3,
                                                 max_minutes=3))
    end = DAY + DAY_MS - 1
    first = ex.klines("SOL/USDT", "1m", DAY, end, 1000).ts
    second = ex.klines("SOL/USDT", "1m", DAY, end, 1000).ts
    third = ex.klines("SOL/USDT", "1m", DAY, end, 1000).ts
    late = np.setdiff1d(second, first)
    assert len(late) == 3 and (np.diff(late) == MINUTE_MS).all()
    assert third.tolist() == second.tolist()
    # another timeframe has its own first reply
    assert len(ex.klines("SOL/USDT", "5m", DAY, end, 1000)) < 288


def test_late_data_takes_one_candle_of_longer_timeframes() -> None:
    ex = make(holes=None, transient=TransientSpec(probability=1.0))
    hours = np.arange(DAY, DAY + 10 * DAY_MS, HOUR_MS, dtype=np.int64)
    assert 9 <= (ex.late_windows("BTC/USDT", "1h", hours) >= 0).sum() <= 11
    quiet = make(holes=None, transient=TransientSpec(probability=0.0))
    assert (quiet.late_windows("BTC/USDT", "1h", hours) < 0).all()


def test_expected_is_what_a_complete_fetch_returns() -> None:
    ex = make(transient=None)
    table = ex.expected("BTC/USDT", "1m", DAY, DAY + 2 * DAY_MS)
    got = ex.klines("BTC/USDT", "1m", DAY, DAY + 2 * DAY_MS - 1, 5000)
    assert table["open"].to_pylist() == got.open.tolist()
    gen = CandleGenerator(7)
    assert table.equals(gen.table("BTC/USDT", "1m", got.ts))


def test_admission_counts_weight_then_429_then_418() -> None:
    ex = make(faults=Faults(weight_limit=10, window_s=60, ban_after=2, ban_s=300))
    verdicts = [ex.admit("spot", "klines", 2) for _ in range(9)]
    assert [v.status for v in verdicts] == [200] * 5 + [429, 429, 418, 418]
    assert verdicts[4].used_weight == 10
    assert verdicts[5].retry_after_s == 30  # the window ends at 12:01:00, now is 12:00:30
    assert verdicts[7].retry_after_s == 300
    assert ex.admit("fapi", "klines", 1).ok  # futures count separately


def test_repeated_429_episodes_earn_a_ban_and_repeat_bans_last_longer() -> None:
    clock = FakeClock(NOW)
    ex = make(clock=clock, faults=Faults(weight_limit=4, window_s=60, ban_episodes=3,
                                         ban_episodes_windows=5, ban_s=100, ban_max_s=300))

    def episode() -> list[int]:
        """Fill the window, one 429, then wait for the next window."""
        statuses = [ex.admit("spot", "klines", 2).status for _ in range(3)]
        clock.set((clock.now_ms() // 60_000 + 1) * 60_000)
        return statuses

    assert episode() == episode() == [200, 200, 429]  # one 429 each: not a ban yet
    verdict = [ex.admit("spot", "klines", 2) for _ in range(3)][-1]
    assert (verdict.status, verdict.retry_after_s) == (418, 100)  # the third in 5 windows
    bans = []
    for _ in range(3):  # after each ban ends, three more episodes in a row
        clock.set(NOW + 3_600_000 * (len(bans) + 1))
        episode()
        episode()
        bans.append([ex.admit("spot", "klines", 2) for _ in range(3)][-1].retry_after_s)
    assert bans == [200, 300, 300]  # doubled, then capped
    clock.set(NOW + 7 * 60_000)  # far apart, episodes are no ban
    fresh = make(clock=clock, faults=Faults(weight_limit=4, window_s=60, ban_episodes=3,
                                            ban_episodes_windows=5))
    for _ in range(4):
        assert [fresh.admit("spot", "klines", 2).status for _ in range(3)] == [200, 200, 429]
        clock.set(clock.now_ms() + 3 * 60_000)
    assert fresh.banned == 0


def test_an_enforced_budget_smaller_than_advertised_counts_per_ip() -> None:
    ex = make(faults=Faults(weight_limit=100, enforced_weight_limit=10, window_s=60,
                            ban_after=3))
    assert ex.weight_limit("spot") == 100 and ex.enforced_limit("spot") == 10
    a = [ex.admit("spot", "klines", 2, "10.0.0.1").status for _ in range(6)]
    assert a == [200] * 5 + [429]
    assert ex.admit("spot", "klines", 2, "10.0.0.2").ok  # another IP, another budget
    assert ex.used_weight("spot", "10.0.0.1") == 12 and ex.used_weight("spot") == 14
    assert (ex.rate_limited, ex.banned) == (1, 0)


def test_sending_during_a_429s_retry_after_earns_a_418() -> None:
    clock = FakeClock(NOW)
    ex = make(clock=clock, faults=Faults(weight_limit=10, window_s=60, ban_after=2, ban_s=300))
    assert [ex.admit("spot", "klines", 2).status for _ in range(6)] == [200] * 5 + [429]
    clock.set(NOW + 29_000)  # the Retry-After (to 12:01:00) still runs, whatever the weight
    late = ex.admit("spot", "klines", 2)
    assert (late.status, late.retry_after_s) == (429, 1)
    clock.set(NOW + 30_000)  # a new window, the Retry-After honoured: a clean slate
    assert ex.admit("spot", "klines", 2).ok
    assert [ex.admit("spot", "klines", 2).status for _ in range(7)] == \
        [200] * 4 + [429, 429, 418]
    assert (ex.rate_limited, ex.banned) == (4, 1)


def test_forced_faults_are_consumed_in_order() -> None:
    ex = make()
    ex.force("503", 2)
    ex.force("truncate", endpoint="exchangeInfo")
    assert ex.admit("spot", "exchangeInfo", 20).truncate
    assert [ex.admit("spot", "klines", 2).status for _ in range(3)] == [503, 503, 200]


def test_random_faults_follow_the_seed() -> None:
    def draw() -> list[int]:
        ex = make(faults=Faults(error_rate=0.3, error_burst=2, seed=5))
        return [ex.admit("spot", "klines", 2).status for _ in range(50)]

    statuses = draw()
    assert statuses == draw()
    assert 5 < statuses.count(503) < 40


# ---------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def sim() -> SimExchange:
    return make(faults=Faults(weight_limit=10**9), transient=None,
                extra_holes=[Hole(DAY + 10 * MINUTE_MS, DAY + 15 * MINUTE_MS)])


@pytest.fixture(scope="module")
def client(sim: SimExchange) -> Iterator[httpx.Client]:
    with run_in_thread(sim) as url, httpx.Client(base_url=url) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(sim: SimExchange) -> None:
    sim.clear_forced()


def test_ping_time_and_weight_header(client: httpx.Client, sim: SimExchange) -> None:
    r = client.get("/api/v3/ping")
    assert r.status_code == 200 and r.json() == {}
    before = int(r.headers["x-mbx-used-weight-1m"])
    r = client.get("/api/v3/time")
    assert r.json() == {"serverTime": NOW}
    assert int(r.headers["x-mbx-used-weight-1m"]) == before + 1
    r = client.get("/api/v3/exchangeInfo")
    assert int(r.headers["x-mbx-used-weight-1m"]) == before + 21


def test_exchange_info_shapes(client: httpx.Client) -> None:
    spot = client.get("/api/v3/exchangeInfo").json()
    ids = {s["symbol"] for s in spot["symbols"]}
    assert {"BTCUSDT", "ETHUSDT", "SOLUSDT"} <= ids
    assert spot["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                     "intervalNum": 1, "limit": 10**9}
    btc = next(s for s in spot["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["status"] == "TRADING" and btc["baseAsset"] == "BTC"
    fut = client.get("/fapi/v1/exchangeInfo").json()
    perp = next(s for s in fut["symbols"] if s["symbol"] == "BTCUSDT")
    assert perp["contractType"] == "PERPETUAL" and perp["marginAsset"] == "USDT"
    assert perp["onboardDate"] == to_ms("2017-08-17")


def test_klines_wire_format(client: httpx.Client, sim: SimExchange) -> None:
    params: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1m", "startTime": DAY,
                                    "endTime": DAY + 29 * MINUTE_MS}
    rows = client.get("/api/v3/klines", params=params).json()
    assert len(rows) == 25  # 30 minutes minus the 5-minute hole
    first = rows[0]
    assert len(first) == 12
    assert isinstance(first[0], int) and isinstance(first[6], int) and isinstance(first[8], int)
    assert all(isinstance(first[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10, 11))
    assert first[6] == first[0] + MINUTE_MS - 1
    expected = sim.expected("BTC/USDT", "1m", DAY, DAY + 30 * MINUTE_MS)
    assert [float(r[1]) for r in rows] == expected["open"].to_pylist()
    assert [float(r[7]) for r in rows] == expected["quote_volume"].to_pylist()
    assert [r[8] for r in rows] == expected["trades"].to_pylist()


def test_klines_default_limit_and_open_candle(client: httpx.Client) -> None:
    rows = client.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m"}).json()
    assert len(rows) == 500
    assert rows[-1][0] == NOW - NOW % MINUTE_MS  # the still-open candle is included


def test_klines_errors(client: httpx.Client) -> None:
    r = client.get("/api/v3/klines", params={"symbol": "NOPEUSDT", "interval": "1m"})
    assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
    r = client.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m",
                                             "limit": 1001})
    assert r.status_code == 400 and r.json()["code"] == -1130
    r = client.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "7m"})
    assert r.status_code == 400 and r.json()["code"] == -1120
    assert "x-mbx-used-weight-1m" in r.headers


@pytest.mark.parametrize(("limit", "weight"), [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5),
                                               (1000, 5), (1500, 10)])
def test_futures_klines_weight_by_limit(client: httpx.Client, limit: int, weight: int) -> None:
    params: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1m", "limit": limit}
    before = int(client.get("/fapi/v1/ping").headers["x-mbx-used-weight-1m"])
    r = client.get("/fapi/v1/klines", params=params)
    assert r.status_code == 200 and len(r.json()) == limit
    assert int(r.headers["x-mbx-used-weight-1m"]) == before + weight


def test_futures_limit_cap(client: httpx.Client) -> None:
    r = client.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m",
                                              "limit": 1501})
    assert r.status_code == 400 and r.json()["code"] == -1130


def test_forced_faults_over_http(client: httpx.Client, sim: SimExchange) -> None:
    params: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1h", "limit": 10}
    sim.force("429", retry_after_s=7)
    r = client.get("/api/v3/klines", params=params)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["code"] == -1003
    sim.force("503")
    assert client.get("/api/v3/klines", params=params).status_code == 503
    sim.force("truncate")
    r = client.get("/api/v3/klines", params=params)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    sim.force("high_low")
    rows = client.get("/api/v3/klines", params=params).json()
    assert any(float(row[2]) < float(row[3]) for row in rows)
    assert len(client.get("/api/v3/klines", params=params).json()) == 10


def test_rate_limit_over_http_then_ban() -> None:
    ex = make(faults=Faults(weight_limit=4, window_s=60, ban_after=1, ban_s=600))
    with run_in_thread(ex) as url, httpx.Client(base_url=url) as c:
        params: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1}
        statuses = [c.get("/api/v3/klines", params=params) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 429, 418, 418]
    assert statuses[2].headers["retry-after"] == "30"
    assert statuses[3].headers["retry-after"] == "600"
    assert statuses[4].json()["code"] == -1003


def test_the_used_weight_header_reports_the_enforced_count_not_the_advertised() -> None:
    ex = make(faults=Faults(weight_limit=6000, enforced_weight_limit=24, window_s=60))
    with run_in_thread(ex) as url, httpx.Client(base_url=url) as c:
        info = c.get("/api/v3/exchangeInfo").json()
        params: dict[str, str | int] = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1}
        replies = [c.get("/api/v3/klines", params=params) for _ in range(3)]
    assert info["rateLimits"][0]["limit"] == 6000  # what is advertised
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert [r.headers["x-mbx-used-weight-1m"] for r in replies] == ["22", "24", "26"]
    assert replies[2].headers["retry-after"] == "30"


def test_build_exchange_options() -> None:
    ex = build_exchange(seed=3, weight_limit=100, window_s=10, holes_per_day=4,
                        late_per_day=0, error_rate=0.1)
    assert ex.faults.weight_limit == 100 and ex.faults.window_s == 10
    assert ex.holes is not None and ex.holes.period_ms == DAY_MS // 4
    assert ex.transient is None


# ---------------------------------------------------------------------- COIN-M (/dapi)


def dapi(client: httpx.Client, **params: str | int) -> httpx.Response:
    return client.get("/dapi/v1/klines", params={"symbol": "BTCUSD_PERP", **params})


def test_coin_m_exchange_info(client: httpx.Client) -> None:
    info = client.get("/dapi/v1/exchangeInfo").json()
    assert info["rateLimits"][0]["limit"] == 2400
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSD_PERP")
    assert btc["pair"] == "BTCUSD" and btc["contractType"] == "PERPETUAL"
    assert btc["contractStatus"] == "TRADING" and "status" not in btc
    assert (btc["contractSize"], btc["marginAsset"], btc["baseAsset"], btc["quoteAsset"]) == (
        100, "BTC", "BTC", "USD")
    eth = next(s for s in info["symbols"] if s["symbol"] == "ETHUSD_PERP")
    assert eth["contractSize"] == 10 and eth["onboardDate"] == to_ms("2017-08-17")


def test_coin_m_klines_inverse_layout(client: httpx.Client, sim: SimExchange) -> None:
    rows = dapi(client, interval="1h", startTime=DAY, endTime=DAY + DAY_MS - 1).json()
    truth = sim.expected("BTC/USD:BTC", "1h", DAY, DAY + DAY_MS)
    assert [r[0] for r in rows] == truth["ts"].cast("int64").to_pylist()
    assert all(r[5].isdigit() and r[9].isdigit() for r in rows)  # whole contracts
    assert [int(r[5]) * 100.0 for r in rows] == truth["quote_volume"].to_pylist()
    assert [float(r[7]) for r in rows] == truth["volume"].to_pylist()  # the coin volume
    # COIN-M shares the USDⓈ-M perpetual's maintenance holes, not its prices.
    um = sim.expected("BTC/USDT:USDT", "1m", DAY, DAY + DAY_MS)
    cm = sim.expected("BTC/USD:BTC", "1m", DAY, DAY + DAY_MS)
    assert um["ts"].equals(cm["ts"]) and not um["close"].equals(cm["close"])


def test_coin_m_span_is_200_days_and_answers_newest_first(client: httpx.Client) -> None:
    start = DAY - 200 * DAY_MS
    r = dapi(client, interval="1d", startTime=start, endTime=DAY)  # exactly 200 days
    assert r.status_code == 200 and len(r.json()) == 201
    r = dapi(client, interval="1d", startTime=start, endTime=DAY + 1)
    assert r.status_code == 400
    assert r.json() == {"code": -1127, "msg": "More than 4800 hours between startTime and "
                                              "endTime."}
    # The newest ``limit`` of the span, where spot and USDⓈ-M give the oldest.
    rows = dapi(client, interval="1d", startTime=start, endTime=DAY, limit=3).json()
    assert [r[0] for r in rows] == [DAY - 2 * DAY_MS, DAY - DAY_MS, DAY]
    # startTime alone: the span ends 200 days later; endTime alone: it starts 200 before.
    rows = dapi(client, interval="1d", startTime=start, limit=1).json()
    assert [r[0] for r in rows] == [DAY]
    rows = dapi(client, interval="1w", endTime=DAY, limit=1500).json()
    assert start <= rows[0][0] < start + 7 * DAY_MS and rows[-1][0] <= DAY
    r = dapi(client, interval="1m", limit=1501)
    assert r.status_code == 400 and r.json()["code"] == -1130


def test_coin_m_has_its_own_weight_window() -> None:
    ex = make(faults=Faults(fapi_weight_limit=3, dapi_weight_limit=3, ban_after=10))
    with run_in_thread(ex) as url, httpx.Client(base_url=url) as c:
        params: dict[str, str | int] = {"symbol": "BTCUSD_PERP", "interval": "1m", "limit": 1}
        codes = [c.get("/dapi/v1/klines", params=params).status_code for _ in range(4)]
        fapi = c.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m",
                                                "limit": 1})
    assert codes == [200, 200, 200, 429]
    assert fapi.status_code == 200 and fapi.headers["x-mbx-used-weight-1m"] == "1"
    assert ex.used_weight("dapi") == 4 and ex.used_weight("fapi") == 1


def test_delisted_coin_m_perpetual_settles() -> None:
    ex = SimExchange(7, {"OLD/USDT": "2020-01-01"}, clock=FakeClock(NOW),
                     delistings={"OLD/USDT": "2024-06-01"})
    with run_in_thread(ex) as url, httpx.Client(base_url=url) as c:
        (old,) = c.get("/dapi/v1/exchangeInfo").json()["symbols"]
        params: dict[str, str | int] = {"symbol": "OLDUSD_PERP", "interval": "1d"}
        rows = c.get("/dapi/v1/klines", params={**params, "endTime": to_ms("2024-06-10")})
        late = c.get("/dapi/v1/klines", params={**params, "endTime": NOW})
    assert old["contractStatus"] == "SETTLING" and old["deliveryDate"] == to_ms("2024-06-01")
    assert rows.json()[-1][0] == to_ms("2024-05-31")
    assert late.json() == []  # the 200 days before now are all after the delisting


def test_the_used_weight_header_names_the_window_exchange_info_advertises() -> None:
    ex = make(faults=Faults(window_s=3))
    with run_in_thread(ex) as url:
        info = httpx.get(f"{url}/api/v3/exchangeInfo")
    weight = next(r for r in info.json()["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT")
    assert (weight["interval"], weight["intervalNum"]) == ("SECOND", 3)
    assert info.headers["x-mbx-used-weight-3s"] == "20"
    assert "x-mbx-used-weight-1m" not in info.headers
