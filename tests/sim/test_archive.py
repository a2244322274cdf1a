"""The sim's data.binance.vision archive over real HTTP: files, CHECKSUMs, quirks by date,
scripted faults and the S3 listing, checked against the sim's own REST klines.

The exchange's clock is a FakeClock at NOW, so which files exist is exact.
"""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS, HOUR_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.archive import (
    CSV_HEADER,
    CSV_HEADER_COINM,
    ArchiveFault,
    ArchiveSpec,
    FaultKind,
    SimArchive,
    parse_key,
)
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2025-01-03T12:00:00Z")
ODD = "我踏马来了USDT"
SYMBOLS = {"BTC/USDT": "2017-08-17", "ETH/USDT": "2017-08-17", "NEW/USDT":
           to_ms("2025-01-02T10:00:00Z"), "我踏马来了/USDT": "2024-06-01"}
S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def spot_1h(day: str) -> str:
    return f"data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-{day}"


FAULTS = (
    ArchiveFault(FaultKind.MISSING, spot_1h("2024-12-20")),
    ArchiveFault(FaultKind.MISSING, spot_1h("2024-12-21"), until_ms=NOW + HOUR_MS),
    ArchiveFault(FaultKind.BAD_CHECKSUM, spot_1h("2024-12-22"), times=1),
    ArchiveFault(FaultKind.TRUNCATED, spot_1h("2024-12-23")),
    ArchiveFault(FaultKind.BAD_NUMBER, spot_1h("2024-12-24")),
    ArchiveFault(FaultKind.WRONG_DATE, spot_1h("2024-12-25")),
    ArchiveFault(FaultKind.ERROR, spot_1h("2024-12-26"), times=2, status=502),
    ArchiveFault(FaultKind.SLOW, spot_1h("2024-12-27"), times=1, delay_s=1.0),
    ArchiveFault(FaultKind.TRUNCATED, "data/futures/cm/", times=1, listing=True),
)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture(scope="module")
def exchange(clock: FakeClock) -> SimExchange:
    # holes stay on (the archive must skip the same candles REST does); no late data
    return SimExchange(7, SYMBOLS, clock=clock, transient=None)


@pytest.fixture(scope="module")
def http(exchange: SimExchange) -> Iterator[httpx.Client]:
    spec = ArchiveSpec(faults=FAULTS, page_size=3)
    with run_in_thread(exchange, archive=spec) as url, httpx.Client(base_url=url) as client:
        yield client


def unzip(body: bytes) -> tuple[str, str]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        (name,) = zf.namelist()
        return name, zf.read(name).decode()


def fetch(http: httpx.Client, key: str) -> tuple[str, list[list[str]], bool]:
    """GET a zip and its CHECKSUM, verify, unzip: (csv name, rows, had header)."""
    body = http.get(f"/{quote(key)}.zip")
    assert body.status_code == 200, key
    checksum = http.get(f"/{quote(key)}.zip.CHECKSUM")
    digest, name = checksum.text.split()
    assert name == key.rsplit("/", 1)[1] + ".zip"
    assert digest == hashlib.sha256(body.content).hexdigest()
    csv_name, text = unzip(body.content)
    lines = text.splitlines()
    header = not lines[0][0].isdigit()
    if header:
        assert lines[0] == (CSV_HEADER_COINM if "/futures/cm/" in key else CSV_HEADER)
    return csv_name, [line.split(",") for line in lines[header:]], header


def to_ms_rows(rows: list[list[str]], scale: int) -> list[list[str]]:
    return [[str(int(r[0]) // scale), *r[1:6], str((int(r[6]) + 1) // scale - 1), *r[7:]]
            for r in rows]


def rest(http: httpx.Client, api: str, market_id: str, interval: str, start: int,
         end: int) -> list[list[str]]:
    path = {"spot": "/api/v3/klines", "fapi": "/fapi/v1/klines", "dapi": "/dapi/v1/klines"}[api]
    reply = http.get(path, params={"symbol": market_id, "interval": interval,
                                   "startTime": start, "endTime": end - 1, "limit": 1000})
    assert reply.status_code == 200
    return [[str(v) for v in row] for row in reply.json()]


# ---------------------------------------------------------------------- formats by date


def test_spot_daily_before_2025_is_milliseconds_without_header(http: httpx.Client) -> None:
    key = "data/spot/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2024-12-31"
    name, rows, header = fetch(http, key)
    assert name == "BTCUSDT-5m-2024-12-31.csv" and not header
    assert all(len(r[0]) == 13 and r[6].endswith("999") for r in rows)
    day = to_ms("2024-12-31")
    assert rows == rest(http, "spot", "BTCUSDT", "5m", day, day + DAY_MS)
    assert 0 < len(rows) <= 288


def test_spot_from_2025_is_microseconds(http: httpx.Client) -> None:
    _, rows, header = fetch(http, "data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2025-01-02")
    assert not header and len(rows) == 24
    assert rows[0][0] == str(to_ms("2025-01-02") * 1000)
    assert rows[0][6] == str((to_ms("2025-01-02") + HOUR_MS) * 1000 - 1)
    day = to_ms("2025-01-02")
    assert to_ms_rows(rows, 1000) == rest(http, "spot", "ETHUSDT", "1h", day, day + DAY_MS)


def test_spot_monthly_matches_rest(http: httpx.Client) -> None:
    name, rows, _ = fetch(http, "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-11")
    assert name == "BTCUSDT-1h-2024-11.csv"
    start, end = to_ms("2024-11-01"), to_ms("2024-12-01")
    assert rows == rest(http, "spot", "BTCUSDT", "1h", start, end) and len(rows) == 720


def test_futures_header_only_on_newer_files(http: httpx.Client) -> None:
    _, rows, header = fetch(http, "data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-02")
    assert header
    day = to_ms("2025-01-02")
    assert rows == rest(http, "fapi", "BTCUSDT", "1h", day, day + DAY_MS)  # ms, not µs
    _, old, header = fetch(http, "data/futures/um/monthly/klines/ETHUSDT/1d/ETHUSDT-1d-2022-03")
    assert not header and len(old) == 31


def test_coin_m_perpetual(http: httpx.Client, exchange: SimExchange) -> None:
    name, rows, header = fetch(
        http, "data/futures/cm/daily/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2025-01-01")
    assert name == "BTCUSD_PERP-1h-2025-01-01.csv" and header and len(rows) == 24
    assert rows[0][0] == str(to_ms("2025-01-01"))
    day = to_ms("2025-01-01")
    assert rows == rest(http, "dapi", "BTCUSD_PERP", "1h", day, day + DAY_MS)
    # Inverse layout: whole contracts of 100 USD in column 5, the coin in column 7.
    truth = exchange.expected("BTC/USD:BTC", "1h", day, day + DAY_MS)
    assert [int(r[5]) * 100.0 for r in rows] == truth["quote_volume"].to_pylist()
    assert [float(r[7]) for r in rows] == truth["volume"].to_pylist()
    assert all(r[9].isdigit() and int(r[9]) <= int(r[5]) for r in rows)
    missing = "/data/futures/cm/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-01.zip"
    assert http.get(missing).status_code == 404


def test_coin_m_old_files_have_no_header_and_other_coins_count_10_usd(
        http: httpx.Client, exchange: SimExchange) -> None:
    _, rows, header = fetch(
        http, "data/futures/cm/monthly/klines/ETHUSD_PERP/1d/ETHUSD_PERP-1d-2022-03")
    assert not header and len(rows) == 31
    start, end = to_ms("2022-03-01"), to_ms("2022-04-01")
    assert rows == rest(http, "dapi", "ETHUSD_PERP", "1d", start, end)
    truth = exchange.expected("ETH/USD:ETH", "1d", start, end)
    assert [int(r[5]) * 10.0 for r in rows] == truth["quote_volume"].to_pylist()


def test_non_ascii_symbol_is_url_quoted(http: httpx.Client) -> None:
    key = f"data/futures/um/daily/klines/{ODD}/1h/{ODD}-1h-2025-01-01"
    raw = http.get(f"/{quote(key)}.zip")
    assert raw.status_code == 200 and "%E6%88%91" in str(raw.request.url)
    name, rows, _ = fetch(http, key)
    assert name == f"{ODD}-1h-2025-01-01.csv"
    day = to_ms("2025-01-01")
    assert rows == rest(http, "fapi", ODD, "1h", day, day + DAY_MS)


def test_same_file_same_bytes(http: httpx.Client, exchange: SimExchange) -> None:
    key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12-30.zip"
    first = http.get(f"/{key}").content
    assert http.get(f"/{key}").content == first
    parsed = parse_key(key)
    assert parsed is not None
    assert SimArchive(exchange).build(parsed[0]).body == first  # a fresh cache, same bytes


# ---------------------------------------------------------------------- what does not exist


@pytest.mark.parametrize("path", [
    "data/spot/daily/klines/NOPEUSDT/1h/NOPEUSDT-1h-2024-12-01.zip",  # unknown symbol
    "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-03.zip",  # today, unfinished
    "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-04.zip.CHECKSUM",  # future
    "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01.zip",  # this month
    "data/spot/daily/klines/NEWUSDT/1h/NEWUSDT-1h-2025-01-01.zip",  # before listing
    "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-13-01.zip",  # no such date
    "data/spot/daily/klines/BTCUSDT/1h/ETHUSDT-1h-2024-12-01.zip",  # name not its folder
    "data/spot/daily/klines/BTCUSDT/7m/BTCUSDT-7m-2024-12-01.zip",  # no such interval
    "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-12-01.zip",
])
def test_absent_files_are_404(http: httpx.Client, path: str) -> None:
    reply = http.get(f"/{path}")
    assert reply.status_code == 404 and "NoSuchKey" in reply.text


def test_listing_day_holds_rows_from_the_listing(http: httpx.Client) -> None:
    _, rows, _ = fetch(http, "data/spot/daily/klines/NEWUSDT/1h/NEWUSDT-1h-2025-01-02")
    assert rows[0][0] == str(to_ms("2025-01-02T10:00:00Z") * 1000) and len(rows) == 14


def test_head_reports_size_and_last_modified(http: httpx.Client) -> None:
    path = "/data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2025-01-02.zip"
    head = http.head(path)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(http.get(path).content)
    assert head.headers["last-modified"] == "Fri, 03 Jan 2025 00:00:00 GMT"
    assert http.head(path.replace("01-02", "01-03")).status_code == 404


# ---------------------------------------------------------------------- scripted faults


def test_missing_day_is_404_and_unlisted(http: httpx.Client) -> None:
    for suffix in (".zip", ".zip.CHECKSUM"):
        assert http.get(f"/{spot_1h('2024-12-20')}{suffix}").status_code == 404
    assert f"{spot_1h('2024-12-20')}.zip" not in list_all(http, spot_1h("2024-12-2"))


def test_late_file_appears_when_its_time_comes(http: httpx.Client, clock: FakeClock) -> None:
    path = f"/{spot_1h('2024-12-21')}.zip"
    assert http.get(path).status_code == 404
    clock.set(NOW + HOUR_MS)
    try:
        assert http.get(path).status_code == 200
    finally:
        clock.set(NOW)


def test_bad_checksum_once(http: httpx.Client) -> None:
    body = http.get(f"/{spot_1h('2024-12-22')}.zip").content
    good = hashlib.sha256(body).hexdigest()
    assert http.get(f"/{spot_1h('2024-12-22')}.zip.CHECKSUM").text.split()[0] != good
    assert http.get(f"/{spot_1h('2024-12-22')}.zip.CHECKSUM").text.split()[0] == good


def test_truncated_zip(http: httpx.Client) -> None:
    body = http.get(f"/{spot_1h('2024-12-23')}.zip").content
    digest = http.get(f"/{spot_1h('2024-12-23')}.zip.CHECKSUM").text.split()[0]
    assert hashlib.sha256(body).hexdigest() != digest
    with pytest.raises(zipfile.BadZipFile):
        unzip(body)


def test_bad_number_has_a_valid_checksum(http: httpx.Client) -> None:
    _, rows, _ = fetch(http, spot_1h("2024-12-24"))
    bad = []
    for row in rows:
        try:
            [float(v) for v in row[1:6]]
        except ValueError:
            bad.append(row)
    assert len(bad) == 1 and len(rows) == 24


def test_wrong_date_rows(http: httpx.Client) -> None:
    name, rows, _ = fetch(http, spot_1h("2024-12-25"))
    assert name == "BTCUSDT-1h-2024-12-25.csv"
    day = to_ms("2024-12-24")
    assert rows == rest(http, "spot", "BTCUSDT", "1h", day, day + DAY_MS)


def test_server_errors_then_success(http: httpx.Client) -> None:
    path = f"/{spot_1h('2024-12-26')}.zip"
    assert [http.get(path).status_code for _ in range(3)] == [502, 502, 200]


def test_slow_reply_then_prompt(http: httpx.Client) -> None:
    path = f"/{spot_1h('2024-12-27')}.zip"
    with pytest.raises(httpx.ReadTimeout):
        http.get(path, timeout=0.1)
    assert http.get(path).status_code == 200


# ---------------------------------------------------------------------- the S3 listing


def list_pages(http: httpx.Client, prefix: str, delimiter: str = "/",
               ) -> Iterator[ET.Element]:
    marker = ""
    while True:
        reply = http.get("/data.binance.vision",
                         params={"prefix": prefix, "delimiter": delimiter, "marker": marker})
        assert reply.status_code == 200
        root = ET.fromstring(reply.content)
        yield root
        if root.findtext(f"{S3}IsTruncated") != "true":
            return
        next_marker = root.findtext(f"{S3}NextMarker")
        marker = next_marker or root.findall(f"{S3}Contents/{S3}Key")[-1].text or ""


def list_all(http: httpx.Client, prefix: str, delimiter: str = "/") -> list[str]:
    found: list[str] = []
    for page in list_pages(http, prefix, delimiter):
        entries = [e.text or "" for e in page.iter()
                   if e.tag in (f"{S3}Key", f"{S3}Prefix") and e.text != prefix]
        assert len(entries) <= 3  # the small page size makes paging happen
        found += entries
    return found


def test_listing_symbols_pages(http: httpx.Client) -> None:
    found = list_all(http, "data/spot/daily/klines/")
    expected = sorted(f"data/spot/daily/klines/{s}/" for s in
                      ("BTCUSDT", "ETHUSDT", "NEWUSDT", ODD))
    assert found == expected


def test_listing_files_with_sizes(http: httpx.Client) -> None:
    found = list_all(http, spot_1h("2024-12-2"))
    days = [f"2024-12-{d}" for d in range(22, 30)]  # 20 missing, 21 not arrived yet
    assert found == [k for d in days for k in (f"{spot_1h(d)}.zip",
                                               f"{spot_1h(d)}.zip.CHECKSUM")]
    pages = list(list_pages(http, spot_1h("2024-12-28")))
    (contents, _) = pages[0].findall(f"{S3}Contents")
    assert contents.findtext(f"{S3}Size") == str(
        len(http.get(f"/{spot_1h('2024-12-28')}.zip").content))
    assert contents.findtext(f"{S3}LastModified") == "2024-12-29T00:00:00.000Z"


def test_listing_without_delimiter_and_cut_page(http: httpx.Client) -> None:
    prefix = "data/futures/cm/monthly/klines/BTCUSD_PERP/1d/BTCUSD_PERP-1d-2024"
    reply = http.get("/data.binance.vision", params={"prefix": prefix})
    with pytest.raises(ET.ParseError):
        ET.fromstring(reply.content)  # the scripted cut page
    found = list_all(http, prefix, delimiter="")
    assert len(found) == 24 and found[0].endswith("2024-01.zip")
