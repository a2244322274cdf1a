"""The CoinGecko source against the sim's CoinGecko over HTTP: host and header by plan,
refused keys named by config path and never echoed, symbol → id with an ambiguous symbol,
429s waited out, no exchange candles; and the planner's ranges against CoinGecko's rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from itertools import pairwise

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.coingecko.app import CoinGeckoSim
from candlekeep.sim.coingecko.spec import CoinGeckoSpec, KeySpec, ohlc_candle_ms, range_granularity
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.coingecko import granularity as g
from candlekeep.sources.coingecko.source import CoinGeckoSource

NOW = to_ms("2025-01-15T12:07:13.250Z")
KEYS = (KeySpec("CG-demo-key", "demo"), KeySpec("CG-pro-key", "analyst"),
        KeySpec("CG-tight-key", "demo", enforced_per_minute=2))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW, autoadvance=True)


@pytest.fixture
def sim(clock: FakeClock) -> CoinGeckoSim:
    return CoinGeckoSim(SimExchange(7, clock=clock, holes=None, transient=None),
                        CoinGeckoSpec(keys=KEYS))


@pytest.fixture
def url(sim: CoinGeckoSim) -> Iterator[str]:
    with run_in_thread(sim.exchange, coingecko=sim) as base:
        yield base


Make = Callable[..., CoinGeckoSource]


@pytest.fixture
async def make(url: str, clock: FakeClock) -> AsyncIterator[Make]:
    made: list[CoinGeckoSource] = []

    def factory(plan: g.Plan = "demo", key: str | None = "CG-demo-key",
                host: g.Plan | None = None) -> CoinGeckoSource:
        src = CoinGeckoSource("cg", plan=plan, api_key=key, clock=clock, max_attempts=3,
                              base_url=CoinGeckoSim.base_url(url, host or plan))
        made.append(src)
        return src

    yield factory
    for src in made:
        await src.close()


async def test_each_plan_uses_its_host_and_key_header(make: Make, sim: CoinGeckoSim) -> None:
    demo = make("demo", "CG-demo-key")
    assert (await demo.coin("btc")).id == "bitcoin"
    assert sim.used("CG-demo-key") == 1 and demo.limiter.budget == 30
    pro = make("pro", "CG-pro-key")
    assert (await pro.coin("sol")).id == "solana"
    assert sim.used("CG-pro-key") == 1 and pro.limiter.budget == 250
    keyless = make("demo", None)
    assert (await keyless.coin("bitcoin")).id == "bitcoin"
    assert sim.used() == 1 and keyless.limiter.budget == 5


@pytest.mark.parametrize(("plan", "key", "host", "names"), [
    ("demo", "CG-wrong-secret-123", "demo", "sources.cg.api_key"),
    ("demo", "CG-pro-key", "demo", "sources.cg.plan: pro"),   # 10010
    ("pro", "CG-demo-key", "pro", "sources.cg.plan: demo"),   # 10011
])
async def test_a_refused_key_names_the_config_path_never_the_key(
        make: Make, plan: g.Plan, key: str, host: str, names: str) -> None:
    src = make(plan, key, host)
    with pytest.raises(SourceError) as err:
        await src.coin("btc")
    text = str(err.value)
    assert "source cg" in text and names in text
    assert key not in text and all(key not in e for e in src.stats.errors)
    assert src.stats.retries == 0  # a refused key is not retried


async def test_a_keyless_caller_refused_is_told_to_set_a_key(url: str, clock: FakeClock) -> None:
    sim_spec = CoinGeckoSpec(keys=KEYS, keyless_per_minute=None)
    sim = CoinGeckoSim(SimExchange(7, clock=clock, holes=None, transient=None), sim_spec)
    with run_in_thread(sim.exchange, coingecko=sim) as base:
        src = CoinGeckoSource("cg", base_url=CoinGeckoSim.base_url(base, "demo"), clock=clock)
        with pytest.raises(SourceError, match=r"wants an API key here: set sources\.cg\.api_key"):
            await src.coin("btc")
        await src.close()


async def test_symbols_map_to_ids_and_an_ambiguous_one_lists_its_candidates(make: Make) -> None:
    src = make()
    assert (await src.coin("BTC")).id == "bitcoin"
    assert (await src.coin("ethereum")).symbol == "eth"
    with pytest.raises(SourceError) as err:
        await src.coin("eth")
    assert "ambiguous" in str(err.value)
    assert "ethereum (Ethereum)" in str(err.value)
    assert "ethereum-wormhole (Ethereum (Wormhole))" in str(err.value)
    with pytest.raises(SourceError, match=r"no coin id or symbol 'bitcoim'.*did you mean bitcoin"):
        await src.coin("bitcoim")
    assert src.stats.requests == 1  # one coin list, cached
    markets = await src.markets()
    assert markets["btc"].market_id == "bitcoin" and "eth" not in markets


async def test_no_exchange_candles_names_the_job_type_to_use(make: Make) -> None:
    with pytest.raises(SourceError, match=r"no exchange candles.*coingecko_prices job type"):
        await make().fetch_candles("bitcoin", "1h", NOW - DAY_MS, NOW)


async def test_a_429_is_waited_out_for_its_retry_after(make: Make, sim: CoinGeckoSim,
                                                       clock: FakeClock) -> None:
    src = make("demo", "CG-tight-key")  # the sim enforces 2 a minute, advertises 30
    await src.coin("btc")
    two_days = g.ChartRange(NOW - 2 * DAY_MS, NOW, NOW - 2 * DAY_MS, NOW)
    await src.market_chart("bitcoin", two_days)
    reply = await src.market_chart("bitcoin", two_days)  # 429, then retried
    assert len(reply["prices"]) > 0
    assert sim.rejected_429 == 1 and src.stats.rate_limited == 1 and src.stats.retries == 1
    assert clock.now_ms() >= (NOW // 60_000 + 1) * 60_000  # waited for the next window


# ------------------------------------------------------------------ planning vs the rules

@pytest.mark.parametrize("tf", ["5m", "1h", "1d"])
@pytest.mark.parametrize("span", [6 * HOUR_MS, 2 * DAY_MS, 30 * DAY_MS, 200 * DAY_MS])
@pytest.mark.parametrize("plan", ["demo", "pro"])
def test_every_planned_range_comes_back_at_the_wanted_width(tf: str, span: int,
                                                            plan: g.Plan) -> None:
    ranges, warnings = g.chart_ranges(tf, NOW - span, NOW, NOW, plan)
    assert ranges
    for r in ranges:
        # CoinGecko sees the request a few seconds later: the rule must still hold.
        assert range_granularity(r.from_ms, r.to_ms, NOW + 5000) == tf
        assert r.from_ms <= r.keep_from and r.keep_to <= max(r.to_ms, NOW)
        if plan == "demo":
            assert r.from_ms >= NOW - 365 * DAY_MS
    covered = sorted((r.keep_from, r.keep_to) for r in ranges)
    assert all(a[1] == b[0] for a, b in pairwise(covered))
    assert covered[-1][1] == NOW
    assert bool(warnings) == (tf == "5m" and span > DAY_MS)


@pytest.mark.parametrize(("tf", "plan"), [("30m", "demo"), ("4h", "demo"), ("1h", "pro"),
                                          ("1d", "pro")])
def test_ohlc_requests_ask_for_the_wanted_body(tf: str, plan: g.Plan) -> None:
    for span in (12 * HOUR_MS, DAY_MS, 2 * DAY_MS, 5 * DAY_MS, 20 * DAY_MS):
        req, warnings = g.ohlc_request(tf, NOW - span, NOW, plan)
        assert req.days in (1, 7, 14, 30, 90, 180, 365)  # CoinGecko refuses any other
        if req.interval is None:
            assert ohlc_candle_ms(req.days) == g.TIMEFRAME_MS[tf]
        else:
            assert req.interval == {"1h": "hourly", "1d": "daily"}[tf]
        # Only 30m cannot reach past a day (days=1 is its only value).
        assert bool(warnings) == (tf == "30m" and span > DAY_MS)
        if not warnings:
            assert req.days * DAY_MS >= span
    assert g.ohlc_request("4h", NOW - 8 * DAY_MS, NOW, plan)[0].days == 14
    _, warnings = g.ohlc_request(tf, NOW - 400 * DAY_MS, NOW, plan)
    assert warnings and "reaches back" in warnings[0]
    if tf == "30m":
        assert "reaches back 24 h only" in warnings[0]


def test_timeframes_a_plan_cannot_give_are_named_with_the_possible_ones() -> None:
    assert g.timeframe_problem("demo", "1m") is not None
    assert g.timeframe_problem("demo", "1h") is None
    assert g.timeframe_problem("demo", "1h", "ohlc") is not None
    assert g.timeframe_problem("pro", "1h", "ohlc") is None
    assert g.possible("demo").startswith("5m (last 24 h only), 1h, 1d, and 30m/4h OHLC")


def test_spacing_tells_the_width_despite_jitter_holes_and_a_present_point() -> None:
    hourly = [NOW - 48 * HOUR_MS + i * HOUR_MS + (i * 7919) % 30_000 for i in range(48)]
    del hourly[10]
    assert g.name_of(g.detect_step([*hourly, NOW])) == "1h"
    assert g.name_of(g.detect_step([NOW + i * 5 * MINUTE_MS for i in range(5)])) == "5m"
    assert g.detect_step([NOW]) is None
    assert g.detect_step([NOW, NOW + 7 * MINUTE_MS, NOW + 14 * MINUTE_MS]) is None
