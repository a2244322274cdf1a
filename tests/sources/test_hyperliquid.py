"""HyperliquidSource over real HTTP against the sim's ``POST /info``, checked against the
sim's truth.

The sim and the source share one FakeClock that moves only when the source sleeps
(backoff, rate-limit waits), so the sim's weight window and the source's limiter see the
same time and waits are asserted on the clock, never on wall time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.config.source_types import HyperliquidSourceConfig
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import BadReplyError, RateLimitedError, SourceError
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.records import fmt_num
from candlekeep.sim.hyperliquid.spec import demo_spec
from candlekeep.sim.hyperliquid.wire import asset_ctxs
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.hyperliquid.source import HyperliquidSource
from candlekeep.sources.hyperliquid.weights import base_weight, items_weight
from candlekeep.sources.metering import metered
from candlekeep.sources.registry import make_source

NOW = to_ms("2024-12-01T12:00:30Z")


@pytest.fixture
def hl() -> HyperliquidSim:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock, holes=None, transient=None)
    return HyperliquidSim(ex, demo_spec(7, 1, idle=0, start="2024-11-01"))


@pytest.fixture
def url(hl: HyperliquidSim) -> Iterator[str]:
    with run_in_thread(hl.exchange, hyperliquid=hl) as base:
        yield base


@pytest.fixture
async def source(hl: HyperliquidSim, url: str) -> AsyncIterator[HyperliquidSource]:
    src = HyperliquidSource("hl", url, clock=hl.clock, max_attempts=4)
    yield src
    await src.close()


def ts_list(table: pa.Table) -> list[int]:
    values: list[int] = pc.cast(table["ts"], pa.int64()).to_pylist()
    return values


def assert_truth(got: pa.Table, hl: HyperliquidSim, coin: str, interval: str, start: int,
                 end: int) -> None:
    """``got`` equals the sim's candles of ``[start, end)`` as Hyperliquid writes them."""
    want = hl.candles(coin, interval, start, end - 1)
    assert ts_list(got) == want.ts.tolist()
    for col in ("open", "high", "low", "close"):
        assert got[col].to_pylist() == getattr(want, col).tolist(), col
    assert got["volume"].to_pylist() == [float(fmt_num(v, 5)) for v in want.volume.tolist()]
    assert got["trades"].to_pylist() == want.trades.tolist()
    assert got["quote_volume"].null_count == got.num_rows  # Hyperliquid gives none


# ---------------------------------------------------------------------- markets


async def test_markets_from_meta_and_spot_meta(source: HyperliquidSource) -> None:
    markets = await source.markets()
    assert set(markets) == {"BTC/USDC:USDC", "ETH/USDC:USDC", "SOL/USDC:USDC",
                            "XRP/USDC:USDC", "PURR/USDC", "HYPE/USDC", "JEFF/USDC"}
    assert markets["BTC/USDC:USDC"].market_id == "BTC"
    assert markets["PURR/USDC"].market_id == "PURR/USDC"  # the first pair keeps its name
    assert markets["HYPE/USDC"].market_id == "@1"
    assert "1w" not in markets["BTC/USDC:USDC"].timeframes  # Thursday weeks: off our grid
    btc = await source.market_meta("BTC/USDC:USDC")
    assert (btc.kind, btc.asset, btc.sz_decimals, btc.max_leverage) == ("perp", 0, 5, 40)
    assert btc.size_step == pytest.approx(1e-5)
    assert btc.price_decimals == 1  # 6 - 5
    assert btc.tick(97_123.0) == 1.0  # 5 significant figures, integer prices always valid
    assert btc.tick(1_234.5) == pytest.approx(0.1)
    xrp = await source.market_meta("XRP/USDC:USDC")
    assert xrp.price_decimals == 6 and xrp.tick(0.51234) == pytest.approx(1e-5)
    hype = await source.market_meta("HYPE/USDC")
    assert (hype.kind, hype.asset, hype.price_decimals) == ("spot", 10_001, 6)  # 8 - 2
    assert hype.tick(0.00012345) == pytest.approx(1e-6)  # decimals bind before sig figs
    assert (await source.market_by_coin("@2")) is not None
    assert source.stats.requests == 2 and source.stats.weight_used == 40
    with pytest.raises(SourceError, match="did you mean BTC/USDC:USDC"):
        await source.market("BTC/USDC:USD")


async def test_timeframes_it_serves(source: HyperliquidSource) -> None:
    with pytest.raises(SourceError, match="no timeframe 1w"):
        source.timeframe("1w")
    assert source.timeframe("8h").name == "8h"


# ---------------------------------------------------------------------- candles


async def test_perp_and_spot_candles_equal_the_truth(source: HyperliquidSource,
                                                     hl: HyperliquidSim) -> None:
    start, end = NOW - 3 * DAY_MS, NOW
    perp = await source.fetch_candles("BTC/USDC:USDC", "1h", start, end)
    first = parse_timeframe("1h").ceil(start)
    assert perp.num_rows == 71
    assert_truth(perp, hl, "BTC", "1h", first, parse_timeframe("1h").floor(NOW))
    spot = await source.fetch_candles("HYPE/USDC", "5m", start, end)
    assert spot.num_rows == 3 * 288 - 1
    assert_truth(spot, hl, "@1", "5m", parse_timeframe("5m").ceil(start),
                 parse_timeframe("5m").floor(NOW))
    assert set(spot["symbol"].to_pylist()) == {"HYPE/USDC"}
    assert source.stats.requests == 4  # meta, spotMeta, one candleSnapshot each


async def test_a_range_older_than_the_horizon_starts_at_it(source: HyperliquidSource,
                                                           hl: HyperliquidSim) -> None:
    got = await source.fetch_candles("ETH/USDC:USDC", "1m", NOW - 30 * DAY_MS, NOW)
    now_open = NOW // MINUTE_MS * MINUTE_MS
    horizon = now_open - 4999 * MINUTE_MS
    assert source.horizon_ms("1m") == horizon
    assert ts_list(got)[0] == horizon and got.num_rows == 4999  # the open candle is not
    assert_truth(got, hl, "ETH", "1m", horizon, now_open)
    assert source.stats.requests == 3, "one request of 5,000 covers the horizon"
    assert await source.first_candle_ms("ETH/USDC:USDC", "1m", 0) == horizon


async def test_first_candle_after_a_listing(hl: HyperliquidSim, url: str) -> None:
    src = HyperliquidSource("hl", url, clock=hl.clock)
    try:
        listing = hl.spec.listing_ms
        assert await src.first_candle_ms("BTC/USDC:USDC", "1d", listing - 30 * DAY_MS) \
            == listing
    finally:
        await src.close()


# ---------------------------------------------------------------------- market data


async def test_asset_contexts_now(source: HyperliquidSource, hl: HyperliquidSim) -> None:
    table = await source.asset_contexts()
    want = asset_ctxs(hl.markets, NOW)
    assert table["coin"].to_pylist() == ["BTC", "ETH", "SOL", "XRP"]
    assert set(pc.cast(table["snapshot_ts"], pa.int64()).to_pylist()) == {NOW}
    assert table["mark_px"].to_pylist() == [float(c["markPx"]) for c in want]
    assert table["funding"].to_pylist() == [float(c["funding"]) for c in want]
    assert table["open_interest"].to_pylist() == [float(c["openInterest"]) for c in want]
    assert table["premium"].to_pylist() == [float(c["premium"]) for c in want]
    assert set(table["source"].to_pylist()) == {"hl"}
    assert table.schema.names[:3] == ["source", "coin", "snapshot_ts"]


async def test_funding_history_pages_forward(source: HyperliquidSource,
                                             hl: HyperliquidSim) -> None:
    start, end = NOW - 40 * DAY_MS, NOW
    before = hl.requests_by_type.get("fundingHistory", 0)
    table = await source.funding_history("BTC/USDC:USDC", start, end)
    want = hl.funding_history("BTC", start, end - 1)
    assert len(want) == 960
    assert pc.cast(table["time"], pa.int64()).to_pylist() == [w["time"] for w in want]
    assert table["funding_rate"].to_pylist() == [float(w["fundingRate"]) for w in want]
    assert table["premium"].to_pylist() == [float(w["premium"]) for w in want]
    assert set(table["coin"].to_pylist()) == {"BTC"}
    assert hl.requests_by_type["fundingHistory"] - before == 2  # 500, then a short 460
    # A range with nothing in it: one request, an empty table of the same shape.
    empty = await source.funding_history("SOL", NOW - 10 * MINUTE_MS, NOW - 5 * MINUTE_MS)
    assert empty.num_rows == 0 and empty.schema == table.schema
    with pytest.raises(SourceError, match="spot pair; funding exists for perpetuals only"):
        await source.funding_history("HYPE/USDC", start, end)
    with pytest.raises(SourceError, match="no market 'DOGE'"):
        await source.funding_history("DOGE", start, end)


async def test_funding_history_pages_that_end_exactly_full(hl: HyperliquidSim,
                                                           url: str) -> None:
    src = HyperliquidSource("hl", url, clock=hl.clock)
    try:
        hours = 1000  # two full pages: a third, empty one ends it
        start = (NOW // HOUR_MS - hours) * HOUR_MS
        end = (NOW // HOUR_MS) * HOUR_MS
        table = await src.funding_history("ETH", start, end)
        want = [w["time"] for w in hl.funding_history("ETH", start, end - 1)]
        assert len(want) == hours
        assert pc.cast(table["time"], pa.int64()).to_pylist() == want
        assert hl.requests_by_type["fundingHistory"] == 3
    finally:
        await src.close()


# ---------------------------------------------------------------------- weights


async def test_the_limiter_charges_what_the_server_counts(source: HyperliquidSource,
                                                          hl: HyperliquidSim) -> None:
    with metered() as meter:
        await source.fetch_candles("BTC/USDC:USDC", "1m", NOW - 2 * DAY_MS, NOW)
        await source.fetch_candles("PURR/USDC", "15m", NOW - 10 * DAY_MS, NOW)
        await source.funding_history("SOL", NOW - 30 * DAY_MS, NOW)
        await source.asset_contexts()
    # meta 20 + spotMeta 20; 1m: 20 + 2,879 // 60 and 15m: 20 + 959 // 60 (closed candles
    # only: the request ends before the open one); funding 20 + 500 // 20, 20 + 220 // 20;
    # contexts 20.
    want = 20 + 20 + (20 + 2879 // 60) + (20 + 959 // 60) + (20 + 25) + (20 + 11) + 20
    assert hl.used_weight() == want
    assert source.limiter.granted_weight == want
    assert source.stats.weight_used == want and meter.weight == want
    assert meter.requests == source.stats.requests == 7
    assert base_weight("clearinghouseState") == 2 and base_weight("userRole") == 60
    assert items_weight("userFillsByTime", 2000) == 100
    assert items_weight("candleSnapshot", 59) == 0 and items_weight("meta", 500) == 0


async def test_a_429_waits_for_the_window_and_succeeds() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock, holes=None, transient=None)
    hl = HyperliquidSim(ex, dataclasses.replace(demo_spec(7, 1, idle=0), weight_limit=120))
    with run_in_thread(ex, hyperliquid=hl) as url:
        source = HyperliquidSource("hl", url, clock=clock)
        try:
            await source.markets()
            # Someone else on the same IP spends the rest of this minute's budget.
            with httpx.Client(base_url=url) as other:
                while hl.used_weight() + 20 <= hl.spec.weight_limit:
                    assert other.post("/info", json={"type": "meta"}).status_code == 200
            t0 = clock.now_ms()
            got = await source.fetch_candles("SOL/USDC:USDC", "1h", NOW - DAY_MS, NOW)
        finally:
            await source.close()
    assert got.num_rows == 23
    assert source.stats.rate_limited == 1 and source.stats.retries == 1
    assert clock.now_ms() // 60_000 > t0 // 60_000, "waited for the next window"
    assert hl.rejected == 1


async def test_a_429_with_retry_after_pauses_as_told(source: HyperliquidSource,
                                                     url: str) -> None:
    # The sim sends no Retry-After (Hyperliquid does not); the client honours one if a
    # proxy in front adds it: the reply's error carries it and the limiter pauses.
    reply = httpx.Response(429, headers={"Retry-After": "7"}, text="null")
    with pytest.raises(RateLimitedError, match="retry after 7s") as err:
        source.client._parse(reply, "meta", "perpetuals")
    assert err.value.retry_after == 7.0 and source.stats.rate_limited == 1
    t0 = source.clock.now_ms()
    await source.markets()
    assert source.clock.now_ms() - t0 >= 7000


@pytest.mark.parametrize("fault", ["500", "502", "truncate", "html"])
async def test_server_errors_and_broken_bodies_are_retried(
        source: HyperliquidSource, hl: HyperliquidSim, fault: Any) -> None:
    await source.markets()
    hl.force(fault, info_type="candleSnapshot")
    got = await source.fetch_candles("BTC/USDC:USDC", "1h", NOW - DAY_MS, NOW)
    assert_truth(got, hl, "BTC", "1h", NOW // HOUR_MS * HOUR_MS - 23 * HOUR_MS,
                 NOW // HOUR_MS * HOUR_MS)
    assert source.stats.retries == 1
    assert hl.requests_by_type["candleSnapshot"] == 2


async def test_retries_run_out_naming_the_request(source: HyperliquidSource,
                                                  hl: HyperliquidSim) -> None:
    hl.force("503", count=4, info_type="fundingHistory")
    with pytest.raises(SourceError, match=r"fundingHistory \(BTC funding from .*HTTP 503"):
        await source.funding_history("BTC", NOW - DAY_MS, NOW)
    assert hl.requests_by_type["fundingHistory"] == 4


async def test_a_4xx_is_a_clear_error_and_not_retried(source: HyperliquidSource,
                                                      hl: HyperliquidSim) -> None:
    with pytest.raises(SourceError) as err:
        await source.info({"type": "fundingHistory", "coin": "BTC", "startTime": "yesterday"},
                          what="a bad body")
    text = str(err.value)
    assert "fundingHistory" in text and "HTTP 422" in text and "could not read" in text
    assert hl.requests_by_type["fundingHistory"] == 1 and source.stats.retries == 0


async def test_an_unreachable_host_is_retried_then_named() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    src = HyperliquidSource("hl", "http://127.0.0.1:9", clock=clock, max_attempts=2)
    try:
        with pytest.raises(SourceError, match=r"meta .*ConnectError"):
            await src.markets()
        assert src.stats.retries == 1
    finally:
        await src.close()


# ---------------------------------------------------------------------- bad replies


@pytest.fixture
async def offline() -> AsyncIterator[HyperliquidSource]:
    """A source whose markets are loaded from the sim's own meta replies, no server: for
    feeding the reply parsers malformed data."""
    from candlekeep.sim.hyperliquid.market import HlMarkets
    from candlekeep.sim.hyperliquid.spec import HyperliquidSpec
    from candlekeep.sim.hyperliquid.wire import meta, spot_meta
    from candlekeep.sources.hyperliquid.markets import by_symbol, parse_meta, parse_spot_meta

    src = HyperliquidSource("hl", "http://127.0.0.1:9", clock=FakeClock(NOW))
    markets = HlMarkets(7, HyperliquidSpec())
    src._hl = by_symbol(parse_meta(meta(markets)) + parse_spot_meta(spot_meta(markets)))
    yield src
    await src.close()


def candle(t_ms: int, **kw: Any) -> dict[str, Any]:
    row = {"t": t_ms, "T": t_ms + 59_999, "s": "BTC", "i": "1m", "o": "100.0", "c": "101.0",
           "h": "102.0", "l": "99.0", "v": "1.5", "n": 3}
    row.update(kw)
    return row


@pytest.mark.parametrize("rows, reason", [
    ({"error": "x"}, "expected a JSON array"),
    ([candle(0, o="abc")], "malformed"),
    ([candle(0, o=None)], "malformed"),
    ([{k: v for k, v in candle(0).items() if k != "n"}], "without 'n'"),
    ([candle(0, s="ETH")], "'ETH'"),
    ([candle(0, i="5m")], "'5m'"),
    ([candle(0, t="0")], "malformed"),
    (["x"], "not an object"),
])
def test_malformed_candles_are_rejected(offline: HyperliquidSource, rows: Any, reason: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "candlekeep.sources"), \
            pytest.raises(BadReplyError, match=reason):
        offline._candle_rows(rows, "BTC/USDC:USDC", "BTC", "1m")
    assert offline.stats.rejected_replies == 1
    assert "reply rejected source=hl what=BTC/USDC:USDC 1m candles" in caplog.text


def test_well_formed_candles_parse(offline: HyperliquidSource) -> None:
    t = offline._candle_rows([candle(0), candle(60_000, n=0)], "BTC/USDC:USDC", "BTC", "1m")
    assert t.num_rows == 2 and t["trades"].to_pylist() == [3, 0]
    assert t["open"].to_pylist() == [100.0, 100.0]


def test_candles_failing_validation_are_rejected_by_the_base(
        offline: HyperliquidSource) -> None:
    table = offline._candle_rows([candle(0, h="98.0")], "BTC/USDC:USDC", "BTC", "1m")
    with pytest.raises(BadReplyError, match="high below"):
        offline.validated(table, "BTC/USDC:USDC", "1m", NOW)
    assert offline.stats.rejected_replies == 1


@pytest.mark.parametrize("page, reason", [
    ([{"coin": "ETH", "fundingRate": "0.0001", "premium": "0.0", "time": 10}], "coin 'ETH'"),
    ([{"coin": "BTC", "fundingRate": "x", "premium": "0.0", "time": 10}], "not a number"),
    ([{"coin": "BTC", "fundingRate": "NaN", "premium": "0.0", "time": 10}], "not finite"),
    ([{"coin": "BTC", "premium": "0.0", "time": 10}], "missing"),
    ([{"coin": "BTC", "fundingRate": "0.1", "premium": "0.0", "time": 5_000}], "outside"),
    ([{"coin": "BTC", "fundingRate": "0.1", "premium": "0", "time": 20},
      {"coin": "BTC", "fundingRate": "0.1", "premium": "0", "time": 10}], "not in order"),
    ({"coin": "BTC"}, "expected a JSON array"),
])
def test_malformed_funding_is_rejected(offline: HyperliquidSource, page: Any,
                                       reason: str) -> None:
    with pytest.raises(BadReplyError, match=reason):
        offline._funding_rows(page, "BTC", 0, 1_000)
    assert offline.stats.rejected_replies == 1


@pytest.mark.parametrize("meta, reason", [
    ({"universe": "BTC"}, "'universe'"),
    ({"universe": [{"name": "BTC"}]}, "szDecimals"),
    ({"universe": [{"name": "BTC", "szDecimals": 12}]}, "outside"),
    ({"universe": [{"name": 7, "szDecimals": 1}]}, "'name'"),
])
def test_malformed_meta_is_rejected(meta: Any, reason: str) -> None:
    from candlekeep.sources.hyperliquid.markets import MetaError, parse_meta

    with pytest.raises(MetaError, match=reason):
        parse_meta(meta)


def test_malformed_spot_meta_is_rejected() -> None:
    from candlekeep.sources.hyperliquid.markets import MetaError, parse_spot_meta

    tokens = [{"name": "USDC", "szDecimals": 8, "index": 0},
              {"name": "PURR", "szDecimals": 0, "index": 1}]
    with pytest.raises(MetaError, match="not two listed tokens"):
        parse_spot_meta({"tokens": tokens,
                         "universe": [{"name": "@0", "index": 0, "tokens": [1, 5]}]})
    (pair,) = parse_spot_meta({"tokens": tokens,
                               "universe": [{"name": "@0", "index": 0, "tokens": [1, 0]}]})
    assert (pair.symbol, pair.coin, pair.sz_decimals) == ("PURR/USDC", "@0", 0)


def test_delisted_perps_are_inactive() -> None:
    from candlekeep.sources.hyperliquid.markets import parse_meta

    old, new = parse_meta({"universe": [
        {"name": "LUNA", "szDecimals": 1, "maxLeverage": 3, "isDelisted": True},
        {"name": "BTC", "szDecimals": 5, "maxLeverage": 40}]})
    assert not old.active and new.active and new.asset == 1


# ---------------------------------------------------------------------- config


async def test_made_from_config(url: str, hl: HyperliquidSim) -> None:
    cfg = HyperliquidSourceConfig(type="hyperliquid", base_url=url + "/",
                                  weight_per_minute=600, max_attempts=3)
    src = make_source("hlc", cfg, hl.clock)
    try:
        assert isinstance(src, HyperliquidSource)
        assert src.url == url and src.limiter.budget == 600
        assert src.retry_policy.max_attempts == 3
        assert "BTC/USDC:USDC" in await src.markets()
    finally:
        await src.close()
    testnet = HyperliquidSourceConfig(type="hyperliquid", testnet=True)
    assert testnet.url == "https://api.hyperliquid-testnet.xyz"


async def test_concurrent_item_charged_requests_never_overrun_the_window() -> None:
    """Four fills pages in flight at once, each costing 20 + 100 once its 2,000 fills are
    counted: the worst case is reserved before sending and the rest given back, so no
    60 s window ever holds more than the budget (charging only after the reply let four
    requests near the edge take it to 1,560)."""
    import asyncio

    from candlekeep.sources.hyperliquid.client import HyperliquidLimiter
    from candlekeep.sources.hyperliquid.weights import worst_items_weight

    clock = FakeClock(NOW, autoadvance=True)
    limiter = HyperliquidLimiter(1200, 60.0, clock=clock)
    sent: list[tuple[int, int]] = []
    worst = worst_items_weight("userFillsByTime")
    assert worst == 100

    async def one(actual_items: int) -> None:
        async with limiter.reserve(base_weight("userFillsByTime") + worst) as grant:
            at = clock.now_ms()
            await asyncio.sleep(0)  # in flight
            extra = items_weight("userFillsByTime", actual_items)
            limiter.refund(grant, worst - extra)
            sent.append((at, base_weight("userFillsByTime") + extra))

    async def worker(items: int) -> None:
        for _ in range(8):
            await one(items)

    await asyncio.gather(*(worker(n) for n in (2000, 2000, 2000, 300)))
    peak = max(sum(w for s, w in sent if t0 <= s < t0 + 60_000) for t0, _ in sent)
    assert peak <= 1200
    assert limiter.granted_weight == sum(w for _, w in sent)
