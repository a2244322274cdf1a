"""Binance archive files: paths, checksum, and every quirk of the CSVs inside the ZIPs."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date

import pyarrow as pa
import pytest

from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sources.binance_archive.parse import (
    COLUMNS,
    BadArchiveFileError,
    ChecksumMismatchError,
    parse_checksum,
    read_kline_zip,
)
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period
from candlekeep.sources.binance_archive.plan import BulkPlan, RestRange, plan_range

NOW = to_ms("2025-03-01")
DAY = date(2025, 1, 2)
DAILY = ArchiveFile(Market.SPOT, "BTCUSDT", "1m", Period.DAILY, DAY)


def rows(start_ms: int, n: int, step: int = MINUTE_MS, unit: int = 1) -> list[str]:
    """n well-formed kline lines; ``unit`` 1000 writes microseconds like spot from 2025."""
    out = []
    for i in range(n):
        t = start_ms + i * step
        o = 100.0 + i
        out.append(f"{t * unit},{o:.8f},{o + 2:.8f},{o - 1:.8f},{o + 1:.8f},1.5,"
                   f"{(t + step - 1) * unit + (unit - 1)},{150.0 + i:.8f},{10 + i},0.7,70.0,0")
    return out


def zipped(file: ArchiveFile, lines: list[str], header: bool = False) -> tuple[bytes, str]:
    body = "\n".join(([",".join(COLUMNS)] if header else []) + lines) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(file.csv_name, body)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def read(file: ArchiveFile, data: bytes, digest: str) -> pa.Table:
    return read_kline_zip(data, digest, file, source="binance", symbol="BTC/USDT", now_ms=NOW,
                          ingested_at_ms=NOW)


def test_paths_of_monthly_daily_and_checksum_for_each_market() -> None:
    spot = ArchiveFile(Market.SPOT, "BTCUSDT", "1m", Period.MONTHLY, date(2024, 2, 1))
    assert spot.url() == ("https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1m/"
                          "BTCUSDT-1m-2024-02.zip")
    assert spot.checksum_url("http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip.CHECKSUM")
    assert (spot.start_ms, spot.end_ms) == (to_ms("2024-02-01"), to_ms("2024-03-01"))
    um = ArchiveFile(Market.USDM, "ETHUSDT", "1h", Period.DAILY, date(2024, 12, 31))
    assert um.path == "data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-12-31.zip"
    assert um.end_ms == to_ms("2025-01-01")
    cm = ArchiveFile(Market.COINM, "BTCUSD_PERP", "1d", Period.MONTHLY, date(2023, 12, 1))
    assert cm.path == ("data/futures/cm/monthly/klines/BTCUSD_PERP/1d/"
                       "BTCUSD_PERP-1d-2023-12.zip")
    assert cm.end_ms == to_ms("2024-01-01")
    with pytest.raises(ValueError, match="1st"):
        ArchiveFile(Market.SPOT, "BTCUSDT", "1m", Period.MONTHLY, date(2024, 2, 3))


def test_non_ascii_symbol_is_percent_encoded_as_utf8() -> None:
    f = ArchiveFile(Market.USDM, "币安人生USDT", "1m", Period.DAILY, date(2025, 10, 9))
    sym = "%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT"
    assert f.path == f"data/futures/um/daily/klines/{sym}/1m/{sym}-1m-2025-10-09.zip"
    assert f.url().isascii()


def test_checksum_file_format() -> None:
    digest = "ab" * 32
    assert parse_checksum(f"{digest.upper()}  {DAILY.zip_name}\n", DAILY) == digest
    with pytest.raises(BadArchiveFileError, match=r"names 'OTHER\.zip'"):
        parse_checksum(f"{digest}  OTHER.zip", DAILY)
    with pytest.raises(BadArchiveFileError, match=r"\.CHECKSUM"):
        parse_checksum("<html>not found</html>", DAILY)


def test_spot_millisecond_file_without_header() -> None:
    start = to_ms("2025-01-02")
    table = read(DAILY, *zipped(DAILY, rows(start, 1440)))
    assert table.num_rows == 1440
    first = table.slice(0, 1).to_pylist()[0]
    assert first["ts"].timestamp() * 1000 == start
    assert (first["symbol"], first["timeframe"], first["source"]) == ("BTC/USDT", "1m", "binance")
    assert (first["open"], first["high"], first["low"], first["close"]) == (100, 102, 99, 101)
    assert (first["volume"], first["quote_volume"], first["trades"]) == (1.5, 150.0, 10)


def test_microsecond_file_gives_the_same_candles_as_millisecond() -> None:
    start = to_ms("2025-01-02")
    ms = read(DAILY, *zipped(DAILY, rows(start, 60)))
    us = read(DAILY, *zipped(DAILY, rows(start, 60, unit=1000)))
    assert us.equals(ms)


def test_microseconds_mixed_with_milliseconds_are_rejected() -> None:
    start = to_ms("2025-01-02")
    lines = rows(start, 3, unit=1000) + rows(start + 3 * MINUTE_MS, 1)
    with pytest.raises(BadArchiveFileError, match="line 4: millisecond"):
        read(DAILY, *zipped(DAILY, lines))


def test_futures_header_row_detected_and_old_files_without_it_read_alike() -> None:
    f = ArchiveFile(Market.USDM, "BTCUSDT", "1m", Period.DAILY, date(2022, 1, 5))
    start = to_ms("2022-01-05")
    with_header = read(f, *zipped(f, rows(start, 30), header=True))
    without = read(f, *zipped(f, rows(start, 30)))
    assert with_header.num_rows == 30
    assert with_header.equals(without)


def test_checksum_mismatch_names_the_file() -> None:
    data, _ = zipped(DAILY, rows(to_ms("2025-01-02"), 5))
    with pytest.raises(ChecksumMismatchError, match=r"BTCUSDT-1m-2025-01-02\.zip") as err:
        read(DAILY, data, "0" * 64)
    assert err.value.expected == "0" * 64


def test_truncated_zip_is_rejected() -> None:
    data, _ = zipped(DAILY, rows(to_ms("2025-01-02"), 500))
    cut = data[: len(data) // 2]
    with pytest.raises(BadArchiveFileError, match=r"BTCUSDT-1m-2025-01-02\.zip: corrupt ZIP"):
        read(DAILY, cut, hashlib.sha256(cut).hexdigest())


def test_corrupt_member_fails_the_zip_crc() -> None:
    data, _ = zipped(DAILY, rows(to_ms("2025-01-02"), 500))
    bad = bytearray(data)
    bad[60] ^= 0xFF  # inside the deflated member
    with pytest.raises(BadArchiveFileError, match="corrupt ZIP"):
        read(DAILY, bytes(bad), hashlib.sha256(bad).hexdigest())


def test_bad_number_names_the_line() -> None:
    lines = rows(to_ms("2025-01-02"), 10)
    lines[6] = lines[6].replace(",1.5,", ",1.5x,", 1)
    with pytest.raises(BadArchiveFileError, match=r"BTCUSDT-1m-2025-01-02\.csv: line 7:"):
        read(DAILY, *zipped(DAILY, lines))
    lines = rows(to_ms("2025-01-02"), 10)
    with pytest.raises(BadArchiveFileError, match="line 5:"):  # with the header as line 1
        read(DAILY, *zipped(DAILY, [*lines[:3], "x" + lines[3], *lines[4:]], header=True))


def test_row_of_another_date_is_rejected() -> None:
    lines = rows(to_ms("2025-01-02"), 5) + rows(to_ms("2025-01-03"), 1)
    with pytest.raises(BadArchiveFileError, match="line 6: open time outside 2025-01-02"):
        read(DAILY, *zipped(DAILY, lines))
    wrong_day = rows(to_ms("2025-01-01"), 5)
    with pytest.raises(BadArchiveFileError, match="line 1: open time outside"):
        read(DAILY, *zipped(DAILY, wrong_day))


def test_row_off_the_grid_is_rejected() -> None:
    lines = rows(to_ms("2025-01-02"), 5) + rows(to_ms("2025-01-02") + 5 * MINUTE_MS + 1, 1)
    with pytest.raises(BadArchiveFileError, match="line 6: open time off the 1m grid"):
        read(DAILY, *zipped(DAILY, lines))
    micro_off = rows(to_ms("2025-01-02"), 3, unit=1000)
    micro_off[1] = micro_off[1].replace("000,", "001,", 1)
    with pytest.raises(BadArchiveFileError, match="line 2: microsecond"):
        read(DAILY, *zipped(DAILY, micro_off))


def test_duplicate_row_is_rejected() -> None:
    lines = rows(to_ms("2025-01-02"), 5)
    with pytest.raises(BadArchiveFileError, match="line 4: duplicate open time"):
        read(DAILY, *zipped(DAILY, [*lines[:3], lines[2], *lines[3:]]))


def test_high_below_low_names_the_line_through_reply_validation() -> None:
    lines = rows(to_ms("2025-01-02"), 40)
    f = lines[33].split(",")
    f[2], f[3] = f[3], f[2]
    lines[33] = ",".join(f)
    with pytest.raises(BadArchiveFileError, match="line 34: 1m: high below open/close"):
        read(DAILY, *zipped(DAILY, lines))


def test_empty_and_header_only_files_are_rejected() -> None:
    with pytest.raises(BadArchiveFileError, match="empty CSV"):
        read(DAILY, *zipped(DAILY, []))
    with pytest.raises(BadArchiveFileError, match="no candle rows"):
        read(DAILY, *zipped(DAILY, [], header=True))


def names(plan: BulkPlan) -> list[str]:
    return [p.file.zip_name for p in plan.files]


PLAN_NOW = to_ms("2025-03-05T13:20:00Z")


def test_plan_whole_months_then_days_then_today_from_rest() -> None:
    plan = plan_range(Market.SPOT, "BTCUSDT", "1m", to_ms("2025-01-01"), PLAN_NOW, PLAN_NOW)
    assert names(plan) == ["BTCUSDT-1m-2025-01.zip", "BTCUSDT-1m-2025-02.zip",
                           "BTCUSDT-1m-2025-03-01.zip", "BTCUSDT-1m-2025-03-02.zip",
                           "BTCUSDT-1m-2025-03-03.zip", "BTCUSDT-1m-2025-03-04.zip"]
    assert (plan.files[1].start_ms, plan.files[1].end_ms) == (to_ms("2025-02-01"),
                                                             to_ms("2025-03-01"))
    assert plan.rest == (RestRange(to_ms("2025-03-05"), PLAN_NOW),)


def test_plan_future_end_leaves_today_and_later_to_rest() -> None:
    plan = plan_range(Market.USDM, "BTCUSDT", "1h", to_ms("2025-03-04"), to_ms("2025-04-01"),
                      PLAN_NOW)
    assert names(plan) == ["BTCUSDT-1h-2025-03-04.zip"]
    assert plan.rest == (RestRange(to_ms("2025-03-05"), to_ms("2025-04-01")),)


def test_plan_range_starting_mid_month_and_mid_day() -> None:
    start = to_ms("2025-01-29T06:00:00Z")
    plan = plan_range(Market.SPOT, "BTCUSDT", "1m", start, to_ms("2025-02-10"), PLAN_NOW)
    assert names(plan) == ["BTCUSDT-1m-2025-01-29.zip", "BTCUSDT-1m-2025-01-30.zip",
                           "BTCUSDT-1m-2025-01-31.zip", "BTCUSDT-1m-2025-02.zip"]
    assert plan.files[0].start_ms == start and plan.files[0].end_ms == to_ms("2025-01-30")
    assert (plan.files[3].start_ms, plan.files[3].end_ms) == (to_ms("2025-02-01"),
                                                             to_ms("2025-02-10"))
    assert plan.rest == ()
    # a past month mostly in range takes its monthly file, trimmed
    plan = plan_range(Market.SPOT, "BTCUSDT", "1m", to_ms("2025-01-10"), to_ms("2025-02-01"),
                      PLAN_NOW)
    assert names(plan) == ["BTCUSDT-1m-2025-01.zip"]
    assert plan.files[0].start_ms == to_ms("2025-01-10")


def test_plan_on_the_first_of_the_month_has_no_daily_files() -> None:
    now = to_ms("2025-03-01T00:30:00Z")
    plan = plan_range(Market.COINM, "BTCUSD_PERP", "5m", to_ms("2025-02-01"), now, now)
    assert names(plan) == ["BTCUSD_PERP-5m-2025-02.zip"]
    assert plan.rest == (RestRange(to_ms("2025-03-01"), now),)


def test_plan_daily_uses_monthly_files_and_rest_for_this_month_weekly_only_rest() -> None:
    plan = plan_range(Market.SPOT, "BTCUSDT", "1d", to_ms("2024-12-01"), PLAN_NOW, PLAN_NOW)
    assert names(plan) == ["BTCUSDT-1d-2024-12.zip", "BTCUSDT-1d-2025-01.zip",
                           "BTCUSDT-1d-2025-02.zip"]
    assert plan.rest == (RestRange(to_ms("2025-03-01"), PLAN_NOW),)
    # A week (or 3 days) opening late in a month closes in the next, after the month's file
    # was written: never from the archive
    now = to_ms("2025-03-01T10:00:00Z")
    for tf in ("1w",):
        plan = plan_range(Market.SPOT, "BTCUSDT", tf, to_ms("2024-01-01"), now, now)
        assert plan == BulkPlan((), (RestRange(to_ms("2024-01-01"), now),))


def test_plan_of_a_range_entirely_today_or_empty() -> None:
    today = to_ms("2025-03-05T01:00:00Z")
    plan = plan_range(Market.SPOT, "BTCUSDT", "1m", today, PLAN_NOW, PLAN_NOW)
    assert plan == BulkPlan((), (RestRange(today, PLAN_NOW),))
    assert plan_range(Market.SPOT, "BTCUSDT", "1m", PLAN_NOW, PLAN_NOW, PLAN_NOW) == BulkPlan(
        (), ())


COINM_HEADER = ("open_time,open,high,low,close,volume,close_time,base_asset_volume,count,"
                "taker_buy_volume,taker_buy_base_asset_volume,ignore")


def test_coinm_file_counts_contracts_and_reads_like_ccxt() -> None:
    """COIN-M: column 5 is contracts, column 7 the base volume (CCXT's volume); the quote
    volume is contracts times the contract size; its header names differ from USDⓈ-M's."""
    f = ArchiveFile(Market.COINM, "BTCUSD_PERP", "1m", Period.DAILY, DAY)
    body = "\n".join([COINM_HEADER, *rows(f.start_ms, 3)]) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f.csv_name, body)
    data = buf.getvalue()
    t = read_kline_zip(data, hashlib.sha256(data).hexdigest(), f, source="cm",
                       symbol="BTC/USD:BTC", now_ms=NOW, ingested_at_ms=NOW,
                       contract_size=100.0)
    assert t["volume"].to_pylist() == [150.0, 151.0, 152.0]
    assert t["quote_volume"].to_pylist() == [150.0, 150.0, 150.0]  # 1.5 contracts x 100 USD
    linear = read(DAILY, *zipped(DAILY, rows(DAILY.start_ms, 3)))
    assert linear["volume"].to_pylist() == [1.5, 1.5, 1.5]


def test_header_of_another_file_type_is_rejected() -> None:
    f = ArchiveFile(Market.USDM, "BTCUSDT", "1m", Period.DAILY, DAY)
    body = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f.csv_name, body + "1,2,3,4,5,6,true\n")
    data = buf.getvalue()
    with pytest.raises(BadArchiveFileError, match="line 1: unexpected header"):
        read(f, data, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(("column", "value", "reason"), [
    (7, "nan", "non-finite quote_volume"), (7, "inf", "non-finite quote_volume"),
    (7, "1e400", "non-finite quote_volume"), (7, "-12.5", "negative quote_volume"),
    (8, "-3", "negative trades")])
def test_bad_quote_volume_or_trades_names_the_line(column: int, value: str,
                                                   reason: str) -> None:
    lines = rows(DAILY.start_ms, 5)
    fields = lines[3].split(",")
    fields[column] = value
    lines[3] = ",".join(fields)
    with pytest.raises(BadArchiveFileError, match=f"line 4: 1m: {reason}"):
        read(DAILY, *zipped(DAILY, lines))
