"""CcxtSource through real CCXT code against the simulated Binance on loopback.

The source's clock is a FakeClock that moves only when the source sleeps (backoff,
Retry-After, pacing), so waits are asserted on the clock, never on wall time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock, SystemClock
from candlekeep.core.errors import (
    BadReplyError,
    BannedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, SimExchange, TransientSpec
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.capabilities import best_page_limit, binance_futures_weight
from candlekeep.sources.ccxt_source import CcxtSource, rebase_urls
from tests.sources.conftest import DAY, EXPLICIT_HOLE, NOW, UNLIMITED

API_KEY = "AKIA-candlekeep-test-key-0123456789"
SECRET = "s3cr3t-candlekeep-test-secret-abcdef"


def make_source(url: str, **kwargs: object) -> CcxtSource:
    kwargs.setdefault("clock", FakeClock(NOW, autoadvance=True))
    return CcxtSource("binance", "binance", base_url=url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def source(sim_url: str) -> AsyncIterator[CcxtSource]:
    src = make_source(sim_url)
    yield src
    await src.close()


def ts_list(table: pa.Table) -> list[int]:
    values: list[int] = pc.cast(table["ts"], pa.int64()).to_pylist()
    return values


def same_candles(got: pa.Table, expected: pa.Table) -> bool:
    return bool(got.drop_columns(["ingested_at"]).equals(expected.drop_columns(["ingested_at"])))


# ---------------------------------------------------------------------- markets, paging


async def test_markets_load_with_one_exchange_info(source: CcxtSource,
                                                   shared_sim: SimExchange) -> None:
    before = shared_sim.requests
    markets = await source.markets()
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert btc.active and "1m" in btc.timeframes and "1w" in btc.timeframes
    assert source.stats.requests == 1 and source.stats.weight_used == 20
    assert shared_sim.requests - before == 1
    await source.markets()
    assert source.stats.requests == 1  # cached


async def test_futures_markets_and_page_limit(sim_url: str) -> None:
    src = make_source(sim_url, market_type="swap")
    try:
        markets = await src.markets()
        assert set(markets) == {m.symbol for m in SimExchange(7).markets("fapi")}
        assert markets["BTC/USDT:USDT"].listing_ms == to_ms("2017-08-17")
        assert src.page_limit("1m") == 499
    finally:
        await src.close()


async def test_a_symbol_of_another_market_type_is_still_served(sim_url: str) -> None:
    """A ``future`` source asked for a perpetual: CCXT loaded it, so it is served, as before
    the shared base checked symbols against the configured type's markets."""
    src = make_source(sim_url, market_type="future")
    try:
        assert "BTC/USDT:USDT" not in await src.markets()
        got = await src.fetch_candles("BTC/USDT:USDT", "1h", DAY, DAY + 24 * 3_600_000)
        assert got.num_rows == 24
    finally:
        await src.close()


async def test_page_limits_follow_the_weight_tables(source: CcxtSource) -> None:
    assert source.page_limit("1m") == 1000
    assert best_page_limit(1500, binance_futures_weight) == 499
    generic = CcxtSource("okx", "okx", clock=FakeClock(NOW))
    try:
        assert generic.page_limit("1m") == 300  # from ccxt's features
        assert generic.limiter.budget >= 1
    finally:
        await generic.close()


async def test_pagination_equals_the_generator(source: CcxtSource,
                                               shared_sim: SimExchange) -> None:
    start, end = DAY, DAY + 5 * DAY_MS  # 7,200 minutes: 8 pages
    got = await source.fetch_candles("BTC/USDT", "1m", start, end)
    expected = shared_sim.expected("BTC/USDT", "1m", start, end, source="binance")
    assert same_candles(got, expected)
    assert got.num_rows < 7200  # maintenance holes are missing, as on the exchange
    assert source.stats.requests == 1 + 8
    assert source.stats.weight_used == 20 + 8 * 2
    assert source.stats.retries == 0


async def test_explicit_hole_comes_back_missing(source: CcxtSource) -> None:
    got = ts_list(await source.fetch_candles("BTC/USDT", "1m", DAY + 90 * MINUTE_MS,
                                             DAY + 120 * MINUTE_MS))
    inside = [t for t in got if EXPLICIT_HOLE.start_ms <= t < EXPLICIT_HOLE.end_ms]
    assert inside == []
    assert got[0] == DAY + 90 * MINUTE_MS and got[-1] == DAY + 119 * MINUTE_MS


async def test_futures_pagination(sim_url: str, shared_sim: SimExchange) -> None:
    src = make_source(sim_url, market_type="swap")
    try:
        start, end = DAY, DAY + 3000 * MINUTE_MS
        got = await src.fetch_candles("BTC/USDT:USDT", "1m", start, end)
        expected = shared_sim.expected("BTC/USDT:USDT", "1m", start, end, source="binance")
        assert same_candles(got, expected)
        assert src.stats.requests == 1 + 7  # exchangeInfo + ceil(3000 / 499) pages
        assert src.stats.weight_used == 1 + 6 * 2 + 1  # the last page holds 6: weight 1
    finally:
        await src.close()


async def test_only_closed_candles_and_bounds(source: CcxtSource) -> None:
    got = ts_list(await source.fetch_candles("ETH/USDT", "1m", NOW - 10 * MINUTE_MS,
                                             NOW + HOUR_MS))
    current = NOW - NOW % MINUTE_MS
    assert got[-1] == current - MINUTE_MS  # the open candle is not a candle yet
    assert ts_list(await source.fetch_candles("ETH/USDT", "1h", NOW, NOW + DAY_MS)) == []
    got = ts_list(await source.fetch_candles("ETH/USDT", "1h", DAY + 1, DAY + 3 * HOUR_MS))
    assert got == [DAY + HOUR_MS, DAY + 2 * HOUR_MS]  # [start, end), on the grid


async def test_first_candle(source: CcxtSource) -> None:
    assert await source.first_candle_ms("SOL/USDT", "1d", 0) == to_ms("2020-08-11")
    assert await source.first_candle_ms("SOL/USDT", "1h", DAY + 1) == DAY + HOUR_MS
    assert await source.first_candle_ms("SOL/USDT", "1d", NOW + DAY_MS) is None


async def test_late_data_is_missing_first_then_repaired() -> None:
    sim = SimExchange(7, clock=FakeClock(NOW), holes=None, faults=UNLIMITED,
                      transient=TransientSpec(probability=1.0, min_minutes=2, max_minutes=2))
    with run_in_thread(sim) as url:
        src = make_source(url)
        try:
            first = await src.fetch_candles("ETH/USDT", "1m", DAY, DAY + 2 * DAY_MS)
            again = await src.fetch_candles("ETH/USDT", "1m", DAY, DAY + 2 * DAY_MS)
        finally:
            await src.close()
    assert again.num_rows == 2 * 1440
    assert 2 <= again.num_rows - first.num_rows <= 6
    assert same_candles(again, sim.expected("ETH/USDT", "1m", DAY, DAY + 2 * DAY_MS,
                                            source="binance"))


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["high_low", "off_grid", "duplicate"])
async def test_malformed_reply_is_rejected_and_logged(
        source: CcxtSource, shared_sim: SimExchange, caplog: pytest.LogCaptureFixture,
        kind: str) -> None:
    await source.markets()
    shared_sim.force(kind)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="candlekeep.sources"), \
            pytest.raises(BadReplyError) as info:
        await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + 10 * HOUR_MS)
    assert info.value.source == "binance" and info.value.symbol == "BTC/USDT"
    assert source.stats.rejected_replies == 1
    assert source.stats.retries == 0  # bad data is not retried
    assert "reply rejected source=binance symbol=BTC/USDT" in caplog.text


async def test_429_retry_after_is_honoured(source: CcxtSource, shared_sim: SimExchange) -> None:
    await source.markets()
    shared_sim.force("429", retry_after_s=7)
    got = await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + 24 * HOUR_MS)
    assert got.num_rows == 24
    assert source.stats.rate_limited == 1 and source.stats.retries == 1
    clock = source.clock
    assert isinstance(clock, FakeClock)
    assert sum(clock.slept) >= 7  # the limiter paused and the retry waited it out


async def test_418_ban_stops_the_source_until_its_retry_after(
        source: CcxtSource, shared_sim: SimExchange) -> None:
    await source.markets()
    shared_sim.force("418", retry_after_s=120)
    with pytest.raises(BannedError):
        await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + 24 * HOUR_MS)
    sent = source.stats.requests
    with pytest.raises(BannedError):  # fails fast: nothing is sent during the ban
        await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + 24 * HOUR_MS)
    assert source.stats.requests == sent and source.stats.rate_limited == 1
    clock = source.clock
    assert isinstance(clock, FakeClock) and clock.slept == []
    clock.set(clock.now_ms() + 120_000)
    got = await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + 24 * HOUR_MS)
    assert got.num_rows == 24


async def test_5xx_burst_and_truncated_json_are_retried(
        source: CcxtSource, shared_sim: SimExchange) -> None:
    from candlekeep.sources.circuit import CircuitBreaker, CircuitConfig

    # Six failures in a row would open the default breaker (5): this test is about retries.
    source.circuit = CircuitBreaker("binance", CircuitConfig(failures=10), clock=source.clock)
    shared_sim.force("truncate", endpoint="exchangeInfo")
    await source.markets()
    shared_sim.force("503", 3)
    shared_sim.force("truncate", 2)
    start, end = DAY, DAY + 3 * DAY_MS
    got = await source.fetch_candles("SOL/USDT", "1m", start, end)
    assert same_candles(got, shared_sim.expected("SOL/USDT", "1m", start, end,
                                                 source="binance"))
    assert source.stats.retries == 1 + 3 + 2


async def test_random_faults_still_give_complete_valid_data() -> None:
    faults = Faults(weight_limit=10**9, error_rate=0.15, error_burst=2, truncate_rate=0.1,
                    slow_rate=0.1, slow_s=0.01, seed=3)
    sim = SimExchange(11, clock=FakeClock(NOW), transient=None, faults=faults)
    with run_in_thread(sim) as url:
        src = make_source(url, max_attempts=12)
        try:
            start, end = DAY, DAY + 10 * DAY_MS
            got = await src.fetch_candles("BNB/USDT", "1m", start, end)
        finally:
            await src.close()
    assert same_candles(got, sim.expected("BNB/USDT", "1m", start, end, source="binance"))
    assert src.stats.retries > 0 and src.stats.rejected_replies == 0


async def test_timeout_is_retried(sim_url: str, shared_sim: SimExchange) -> None:
    src = make_source(sim_url, timeout_s=0.3)
    try:
        await src.markets()
        shared_sim.force("slow", delay_s=1.0)
        got = await src.fetch_candles("BTC/USDT", "1d", DAY, DAY + 3 * DAY_MS)
        assert got.num_rows == 3 and src.stats.retries == 1
    finally:
        await src.close()


async def test_bad_symbol_surfaces_without_retries(source: CcxtSource) -> None:
    with pytest.raises(SourceError) as info:
        await source.fetch_candles("NOPE/USDT", "1h", DAY, DAY + DAY_MS)
    assert not isinstance(info.value, TransientSourceError)
    assert "NOPE/USDT" in str(info.value)
    # A market CCXT still believes in (cached) but the exchange rejects: -1121 from the wire.
    source._ex.markets["BTC/USDT"]["id"] = "GONEUSDT"
    with pytest.raises(SourceError) as info:
        await source.fetch_candles("BTC/USDT", "1h", DAY, DAY + DAY_MS)
    assert not isinstance(info.value, TransientSourceError)
    assert "Invalid symbol" in str(info.value) and "-1121" in str(info.value)
    assert source.stats.retries == 0
    assert source.stats.errors


async def test_secrets_never_appear_in_errors_or_logs(
        sim_url: str, caplog: pytest.LogCaptureFixture) -> None:
    src = make_source(sim_url, api_key=API_KEY, secret=SECRET)
    try:
        with caplog.at_level(logging.DEBUG):
            await src.markets()
            for symbol in (f"{API_KEY}/USDT", f"{SECRET}/USDT"):
                with pytest.raises(SourceError) as info:
                    await src.fetch_candles(symbol, "1h", DAY, DAY + DAY_MS)
                assert API_KEY not in str(info.value) and SECRET not in str(info.value)
                assert "***" in str(info.value)
            # what CCXT logs for a signed request goes through the scrubbing logger
            src._ex.logger.debug("GET %s, Request: %s", "/api/v3/account",
                                 {"X-MBX-APIKEY": API_KEY})
    finally:
        await src.close()
    assert API_KEY not in caplog.text and SECRET not in caplog.text
    assert "X-MBX-APIKEY" in caplog.text
    assert all(API_KEY not in e and SECRET not in e for e in src.stats.errors)


async def test_unknown_timeframe_and_market_type(source: CcxtSource) -> None:
    with pytest.raises(SourceError):
        await source.fetch_candles("BTC/USDT", "7m", DAY, DAY + DAY_MS)
    with pytest.raises(SourceError):
        CcxtSource("x", "binance", market_type="margin")
    with pytest.raises(SourceError):
        CcxtSource("x", "no-such-exchange")


async def test_limiter_keeps_a_real_server_window_from_overflowing() -> None:
    """Real time, short window: the server counts fixed windows, we must never exceed."""
    sim = SimExchange(7, clock=SystemClock(), transient=None,
                      faults=Faults(weight_limit=40, window_s=0.5, ban_after=0))
    with run_in_thread(sim) as url:
        src = CcxtSource("binance", "binance", base_url=url, rate_limit=(40, 0.5))
        try:
            await src.markets()
            got = await src.fetch_candles("ETH/USDT", "1h", to_ms("2022-01-01"),
                                          to_ms("2022-01-01") + 40 * 1000 * HOUR_MS)
        finally:
            await src.close()
    assert got.num_rows > 39_000
    assert sim.rejected == 0 and src.stats.rate_limited == 0
    assert src.stats.requests == 41


def test_rebase_urls_keeps_paths() -> None:
    urls = {"public": "https://api.binance.com/api/v3",
            "nested": {"fapiPublic": "https://fapi.binance.com/fapi/v1?x=1"},
            "list": ["https://a.example/b"], "other": 5}
    out = rebase_urls(urls, "http://127.0.0.1:9999")
    assert out == {"public": "http://127.0.0.1:9999/api/v3",
                   "nested": {"fapiPublic": "http://127.0.0.1:9999/fapi/v1?x=1"},
                   "list": ["http://127.0.0.1:9999/b"], "other": 5}
    assert rebase_urls("https://api.binance.com/api/v3", "https://proxy.local/binance") == \
        "https://proxy.local/binance/api/v3"


async def test_unmapped_client_error_is_not_retried(shared_sim: SimExchange) -> None:
    with run_in_thread(shared_sim) as url:
        src = make_source(url + "/wrong-prefix")  # every path 404s
        try:
            with pytest.raises(SourceError) as info:
                await src.markets()
        finally:
            await src.close()
    assert not isinstance(info.value, TransientSourceError)
    assert "404" in str(info.value) and src.stats.retries == 0


async def test_concurrent_pages_are_metered_per_job(source: CcxtSource) -> None:
    from candlekeep.sources.metering import metered

    await source.markets()
    with metered() as meter:
        await source.fetch_candles("ETH/USDT", "1m", DAY, DAY + 3 * DAY_MS)
    assert meter.requests == 5 and meter.weight == 10  # pages run in child tasks
