"""Binance COIN-M (``binancecoinm``) through real CCXT code against the sim's ``/dapi``.

COIN-M perpetuals are inverse: klines count volume in contracts of a fixed USD size
(100 for BTC, 10 for other coins) and give the coin volume in column 7. CCXT reports the
coin volume as the volume; candlekeep stores it so and the quote (USD) volume as contracts
times the contract size, so the stored rows equal the sim's truth exactly. COIN-M also
refuses a startTime..endTime span over 200 days and answers with the *newest* candles of
a span, which paging and the listing probe must respect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.ccxt_source import CcxtSource

NOW = to_ms("2025-01-01T12:00:30Z")
SYMBOLS = {"BTC/USDT": "2019-09-08", "ETH/USDT": "2020-08-10"}
BTC, ETH = "BTC/USD:BTC", "ETH/USD:ETH"


@pytest.fixture(scope="module")
def cm_sim() -> SimExchange:
    """Holes on, late data off (one fetch is complete), no rate limit."""
    return SimExchange(7, SYMBOLS, clock=FakeClock(NOW), transient=None,
                       faults=Faults(dapi_weight_limit=10**9))


@pytest.fixture(scope="module")
def cm_url(cm_sim: SimExchange) -> Iterator[str]:
    with run_in_thread(cm_sim) as url:
        yield url


@pytest.fixture
async def source(cm_url: str) -> AsyncIterator[CcxtSource]:
    src = CcxtSource("cm", "binancecoinm", market_type="swap", base_url=cm_url,
                     clock=FakeClock(NOW, autoadvance=True), max_attempts=1)
    yield src
    await src.close()


def without_ingested(t: pa.Table) -> pa.Table:
    return t.drop_columns(["ingested_at"])


async def test_markets_are_inverse_with_binance_contract_sizes(
        source: CcxtSource, cm_sim: SimExchange) -> None:
    before = cm_sim.used_weight("dapi")
    markets = await source.markets()
    assert set(markets) == {BTC, ETH}
    btc, eth = markets[BTC], markets[ETH]
    assert (btc.market_id, btc.contract_size, btc.active) == ("BTCUSD_PERP", 100.0, True)
    assert (eth.market_id, eth.contract_size) == ("ETHUSD_PERP", 10.0)
    assert btc.listing_ms == to_ms("2019-09-08")
    ccxt_market = source._ex.market(BTC)
    assert ccxt_market["inverse"] is True and ccxt_market["linear"] is False
    assert ccxt_market["settle"] == "BTC" and ccxt_market["swap"] is True
    assert cm_sim.used_weight("dapi") == before + 1  # one dapi exchangeInfo, nothing else
    assert source.stats.requests == 1


async def test_1m_over_days_equals_the_truth(source: CcxtSource, cm_sim: SimExchange) -> None:
    start, end = to_ms("2024-06-01"), to_ms("2024-06-04")
    got = await source.fetch_candles(BTC, "1m", start, end)
    want = cm_sim.expected(BTC, "1m", start, end, source="cm")
    assert without_ingested(got).equals(without_ingested(want))
    assert 4000 < got.num_rows < 3 * 1440  # maintenance holes are missing
    # Whole contracts of 100 USD, and the coin volume about USD / price.
    contracts = pc.divide(got["quote_volume"], 100.0).to_pylist()
    assert all(c == int(c) and c > 0 for c in contracts)
    ratio = pc.divide(pc.multiply(got["volume"], got["close"]), got["quote_volume"])
    assert pc.min(ratio).as_py() > 0.9 and pc.max(ratio).as_py() < 1.1
    assert source.stats.errors == [] and source.stats.rejected_replies == 0


async def test_1d_over_years_pages_within_200_days(source: CcxtSource,
                                                   cm_sim: SimExchange) -> None:
    start = to_ms("2019-09-08")
    got = await source.fetch_candles(ETH, "1d", start, NOW)
    want = cm_sim.expected(ETH, "1d", start, NOW, source="cm")
    assert without_ingested(got).equals(without_ingested(want))
    assert got.num_rows == (to_ms("2025-01-01") - to_ms("2020-08-10")) // DAY_MS
    days = (to_ms("2025-01-01") - start) // DAY_MS
    assert source.page_limit("1d") == 200 and source.page_limit("1w") == 28
    assert source.stats.requests == 1 + -(-days // 200)  # none refused, none retried
    assert source.stats.errors == [] and source.stats.retries == 0
    weekly = await source.fetch_candles(BTC, "1w", start, NOW)
    assert without_ingested(weekly).equals(
        without_ingested(cm_sim.expected(BTC, "1w", start, NOW, source="cm")))


async def test_first_candle_is_found_although_coin_m_answers_newest_first(
        source: CcxtSource, cm_sim: SimExchange) -> None:
    """A start-only request gets the newest candles of the 200 days after the start: the
    first candle is the listing (years after ``since``) or the first after a hole."""
    assert await source.first_candle_ms(ETH, "1d", to_ms("2017-01-01")) == to_ms("2020-08-10")
    assert await source.first_candle_ms(ETH, "1m", to_ms("2017-01-01")) == to_ms("2020-08-10")
    day = to_ms("2024-03-01")
    first = cm_sim.expected(BTC, "1m", day, day + DAY_MS)["ts"][0].value
    assert first < day + DAY_MS
    assert await source.first_candle_ms(BTC, "1m", day) == first
    recent = NOW - 2 * HOUR_MS  # in the current week: no closed weekly candle to find it
    want = cm_sim.expected(BTC, "15m", recent, NOW)["ts"][0].value
    assert await source.first_candle_ms(BTC, "15m", recent) == want
    assert await source.first_candle_ms(BTC, "15m", NOW - 10 * MINUTE_MS) is None  # open
    assert await source.first_candle_ms(BTC, "1m", NOW + DAY_MS) is None
    assert source.stats.errors == []
