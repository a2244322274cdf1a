"""The archive reader against the simulated archive over HTTP: what the sim serves as
Binance does, the reader turns into exactly the candles REST serves, and every scripted
fault ends in a typed error naming the file (never a wrong row)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.binance_archive.parse import (
    BadArchiveFileError,
    ChecksumMismatchError,
    parse_checksum,
    read_kline_zip,
)
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period

NOW = to_ms("2025-01-03T12:00:00Z")
FAULTY = {kind: date(2024, 12, day) for kind, day in (
    (FaultKind.BAD_CHECKSUM, 22), (FaultKind.TRUNCATED, 23), (FaultKind.BAD_NUMBER, 24),
    (FaultKind.WRONG_DATE, 25))}


def btc(day: date, interval: str = "1h", market: Market = Market.SPOT,
        period: Period = Period.DAILY, symbol_id: str = "BTCUSDT") -> ArchiveFile:
    return ArchiveFile(market, symbol_id, interval, period, day)


@pytest.fixture(scope="module")
def exchange() -> SimExchange:
    return SimExchange(7, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(NOW), transient=None)


@pytest.fixture(scope="module")
def base(exchange: SimExchange) -> Iterator[str]:
    faults = tuple(ArchiveFault(kind, f"data/spot/daily/klines/BTCUSDT/1h/"
                                      f"{btc(day).stem}") for kind, day in FAULTY.items())
    with run_in_thread(exchange, archive=ArchiveSpec(faults=faults)) as url:
        yield url


def fetch(base: str, f: ArchiveFile, symbol: str = "BTC/USDT") -> pa.Table:
    with httpx.Client(timeout=10) as client:
        body = client.get(f.url(base))
        body.raise_for_status()
        sums = client.get(f.checksum_url(base))
        sums.raise_for_status()
    return read_kline_zip(body.content, parse_checksum(sums.text, f), f, source="sb",
                          symbol=symbol, now_ms=NOW, ingested_at_ms=NOW)


def rest(exchange: SimExchange, f: ArchiveFile, symbol: str) -> pa.Table:
    return exchange.expected(symbol, f.interval, f.start_ms, f.end_ms, source="sb")


@pytest.mark.parametrize("f, symbol", [
    (btc(date(2024, 12, 30)), "BTC/USDT"),                          # spot, milliseconds
    (btc(date(2025, 1, 2), "1m"), "BTC/USDT"),                       # spot, microseconds
    (btc(date(2024, 11, 1), period=Period.MONTHLY), "BTC/USDT"),     # spot, a month
    (btc(date(2025, 1, 2), "5m", Market.USDM), "BTC/USDT:USDT"),  # header row
    (btc(date(2022, 3, 1), "1h", Market.USDM), "BTC/USDT:USDT"),  # no header yet
])
def test_archive_rows_are_the_rest_rows(exchange: SimExchange, base: str, f: ArchiveFile,
                                        symbol: str) -> None:
    got = fetch(base, f, symbol)
    want = rest(exchange, f, symbol)
    assert got.num_rows == want.num_rows > 0
    cols = ["ts", "open", "high", "low", "close", "volume", "quote_volume", "trades"]
    assert got.select(cols).equals(want.select(cols))
    assert pc.min(got["ts"]).as_py().timestamp() * 1000 >= f.start_ms


@pytest.mark.parametrize("kind, error, words", [
    (FaultKind.BAD_CHECKSUM, ChecksumMismatchError, "checksum"),
    (FaultKind.TRUNCATED, ChecksumMismatchError, "checksum"),
    (FaultKind.BAD_NUMBER, BadArchiveFileError, "line"),
    (FaultKind.WRONG_DATE, BadArchiveFileError, "line"),
])
def test_every_scripted_fault_is_rejected_naming_the_file(
        base: str, kind: FaultKind, error: type[Exception], words: str) -> None:
    f = btc(FAULTY[kind])
    with pytest.raises(error) as info:
        fetch(base, f)
    assert f.stem in str(info.value) and words in str(info.value).lower()
