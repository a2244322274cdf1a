"""One downloaded kline ZIP to a verified candle table, all in memory.

What the archive really contains (binance/binance-public-data README and issues #246, #283):
twelve columns open_time, open, high, low, close, volume, close_time, quote_volume, count,
taker_buy_volume, taker_buy_quote_volume, ignore; futures files from about 2022 carry that
header row, older ones and spot files do not; spot open times are microseconds from
2025-01-01 on. Both are detected from the bytes, never assumed from the date.

A file is all or nothing: one bad row rejects the whole file, so its range goes to REST
instead of being stored with a hole (or a wrong row) that only the next gap scan would find.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from candlekeep.core.errors import BadReplyError, SourceError
from candlekeep.core.schema import CANDLE_SCHEMA, TS_TYPE
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.sources.binance_archive.paths import ArchiveFile
from candlekeep.sources.binance_volumes import binance_volumes
from candlekeep.sources.validate import validate_candles

COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time",
           "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
_TYPES = {"open_time": pa.int64(), "open": pa.float64(), "high": pa.float64(),
          "low": pa.float64(), "close": pa.float64(), "volume": pa.float64(),
          "quote_volume": pa.float64(), "count": pa.int64()}
# Epoch ms stays below 1e14 until the year 5138; epoch µs passed it in 1973.
_MICROS_FROM = 10**14
_NUMBER = r"^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"
_CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")

_sources_log = logging.getLogger("candlekeep.sources")


class ArchiveFileError(SourceError):
    """An archive file that cannot be used; the caller takes its range from REST."""

    def __init__(self, file_name: str, reason: str) -> None:
        self.file_name = file_name
        self.reason = reason
        super().__init__(f"archive file {file_name}: {reason}")


class ChecksumMismatchError(ArchiveFileError):
    """The ZIP's SHA-256 differs from its .CHECKSUM: worth one refetch, then REST."""

    def __init__(self, file_name: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(file_name, f"SHA-256 {actual} does not match the CHECKSUM's {expected}")


class BadArchiveFileError(ArchiveFileError):
    """Corrupt ZIP or a CSV row that fails a check; ``line`` is the CSV line, 1-based."""

    def __init__(self, file_name: str, reason: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(file_name, reason if line is None else f"line {line}: {reason}")


def parse_checksum(text: str, file: ArchiveFile) -> str:
    """The hex digest from a ``.CHECKSUM`` body (``<sha256>  <file name>``), lower-cased."""
    match = _CHECKSUM_LINE.match(text.strip())
    if match is None:
        raise BadArchiveFileError(f"{file.zip_name}.CHECKSUM",
                                  f"expected '<sha256>  {file.zip_name}', got {text[:120]!r}")
    if match.group(2) != file.zip_name:
        raise BadArchiveFileError(f"{file.zip_name}.CHECKSUM",
                                  f"names {match.group(2)!r}, not {file.zip_name!r}")
    return match.group(1).lower()


def verify_checksum(data: bytes, expected_sha256: str, file: ArchiveFile) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise ChecksumMismatchError(file.zip_name, expected_sha256.lower(), actual)


def read_kline_zip(data: bytes, expected_sha256: str, file: ArchiveFile, *, source: str,
                   symbol: str, now_ms: int, ingested_at_ms: int,
                   contract_size: float | None = None) -> pa.Table:
    """Verified candles of ``file`` (``symbol`` is the CCXT symbol stored with them).

    Column mapping follows the REST path (``CcxtSource._binance_rows``): volume is column 5,
    quote_volume column 7 (COIN-M: see ``binance_volumes``), trades column 8, so archive and
    REST rows of the same candle are identical.
    """
    verify_checksum(data, expected_sha256, file)
    csv_bytes = _unzip(data, file)
    return parse_kline_csv(csv_bytes, file, source=source, symbol=symbol, now_ms=now_ms,
                           ingested_at_ms=ingested_at_ms, contract_size=contract_size)


def _unzip(data: bytes, file: ArchiveFile) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if names != [file.csv_name]:
                raise BadArchiveFileError(
                    file.zip_name, f"expected one member {file.csv_name}, found {names}")
            info = zf.infolist()[0]
            inflated = _inflate(data, info)
            return inflated if inflated is not None else zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise BadArchiveFileError(file.zip_name, f"corrupt ZIP: {exc}") from None


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


def _inflate(data: bytes, info: zipfile.ZipInfo) -> bytes | None:
    """A deflated member in one zlib call, CRC checked; None for anything else (stored,
    encrypted, ZIP64 sizes), which ``ZipFile.read`` handles.

    ``ZipFile.read`` inflates in small chunks from Python, holding the GIL between them; one
    call inflates a month of 1m candles (~9 MB) in about two thirds of the time, without the
    GIL, so the parses of files downloaded in parallel overlap.
    """
    if (info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1
            or info.compress_size >= 0xFFFFFFFF or info.file_size >= 0xFFFFFFFF):
        return None
    at = info.header_offset
    if at + _LOCAL_HEADER.size > len(data):
        raise zipfile.BadZipFile("local file header past the end")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, at)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    start = at + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.compress_size > len(data):
        raise zipfile.BadZipFile("member data past the end")
    raw = memoryview(data)[start:start + info.compress_size]
    out = zlib.decompress(raw, -zlib.MAX_WBITS, max(info.file_size, 1))
    if len(out) != info.file_size or zlib.crc32(out) != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 or size for {info.filename}")
    return out


def parse_kline_csv(csv_bytes: bytes, file: ArchiveFile, *, source: str, symbol: str,
                    now_ms: int, ingested_at_ms: int,
                    contract_size: float | None = None) -> pa.Table:
    """The CSV inside ``file`` to candles; BadArchiveFileError naming the line otherwise.

    ``contract_size`` is given for inverse (COIN-M) files, whose volumes count contracts
    (see ``binance_volumes``)."""
    name = file.csv_name
    if not csv_bytes.strip():
        raise BadArchiveFileError(name, "empty CSV")
    header = not csv_bytes[:1].isdigit()
    first_line = 2 if header else 1  # CSV line of data row 0
    if header:
        got = csv_bytes.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        names = got.split(",")
        # COIN-M names columns 7 and 9-10 after the base asset; the order is the same.
        if len(names) != len(COLUMNS) or names[:7] != list(COLUMNS[:7]):
            raise BadArchiveFileError(name, f"unexpected header {got[:200]!r}", 1)
    raw = _read(csv_bytes, name, header, first_line)
    n = raw.num_rows
    if n == 0:
        # Never published for a day without candles; REST settles what the range holds.
        raise BadArchiveFileError(name, "no candle rows")
    ts = raw["open_time"]
    micros = pc.greater_equal(ts, _MICROS_FROM)
    if pc.any(micros).as_py():
        if not pc.all(micros).as_py():
            row = _first(pc.invert(micros))
            raise BadArchiveFileError(name, "millisecond open time among microsecond ones",
                                      row + first_line)
        _check_off_grid_us(ts, name, first_line)
        ts = pc.divide(ts, 1000)
    tf = parse_timeframe(file.interval)
    ts_np = ts.to_numpy()
    volume, quote_volume = binance_volumes(raw["volume"], raw["quote_volume"], contract_size)
    _check_rows(ts_np, tf.ms, tf.offset_ms, file, first_line)
    table = pa.table(
        {
            "source": pa.repeat(pa.scalar(source, pa.string()), n),
            "symbol": pa.repeat(pa.scalar(symbol, pa.string()), n),
            "timeframe": pa.repeat(pa.scalar(file.interval, pa.string()), n),
            "ts": pa.array(ts_np, pa.int64()).cast(TS_TYPE),
            "open": raw["open"], "high": raw["high"], "low": raw["low"],
            "close": raw["close"], "volume": volume,
            "quote_volume": quote_volume, "trades": raw["count"],
            "ingested_at": pa.repeat(pa.scalar(ingested_at_ms, pa.int64()), n).cast(TS_TYPE),
        },
        schema=CANDLE_SCHEMA,
    )
    try:
        return validate_candles(table, source=source, symbol=symbol, timeframe=file.interval,
                                now_ms=now_ms)
    except BadReplyError as exc:
        bad = _first_rejected_row(table, source, symbol, file.interval, now_ms)
        raise BadArchiveFileError(name, exc.reason,
                                  None if bad is None else bad + first_line) from None


def _read(csv_bytes: bytes, name: str, header: bool, first_line: int) -> pa.Table:
    try:
        return pacsv.read_csv(
            pa.BufferReader(csv_bytes),
            read_options=pacsv.ReadOptions(column_names=list(COLUMNS),
                                           skip_rows=1 if header else 0),
            convert_options=pacsv.ConvertOptions(
                column_types=_TYPES, include_columns=list(_TYPES), strings_can_be_null=False,
                quoted_strings_can_be_null=False, null_values=[]),
        )
    except pa.ArrowInvalid as exc:
        # pyarrow names the column, not the row: find the row on this (error) path only.
        line = _first_bad_number(csv_bytes, header, first_line)
        raise BadArchiveFileError(name, str(exc), line) from None


def _first_bad_number(csv_bytes: bytes, header: bool, first_line: int) -> int | None:
    try:
        text = pacsv.read_csv(
            pa.BufferReader(csv_bytes),
            read_options=pacsv.ReadOptions(column_names=list(COLUMNS),
                                           skip_rows=1 if header else 0),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(COLUMNS, pa.string()),
                include_columns=list(_TYPES)))
    except pa.ArrowInvalid:
        return None  # a row with the wrong column count: pyarrow's message quotes it
    bad = [_first(pc.invert(pc.match_substring_regex(text[col], _NUMBER)))
           for col in _TYPES]
    found = [row for row in bad if row >= 0]
    return min(found) + first_line if found else None


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    """Index of the first true in ``mask``, -1 if none."""
    return int(pc.index(mask, True).as_py())


def _check_off_grid_us(open_us: pa.ChunkedArray, name: str, first_line: int) -> None:
    frac = pc.not_equal(pc.subtract(open_us, pc.multiply(pc.divide(open_us, 1000), 1000)), 0)
    if pc.any(frac).as_py():
        raise BadArchiveFileError(name, "microsecond open time not on a whole millisecond",
                                  _first(frac) + first_line)


def _check_rows(ts: np.ndarray, tf_ms: int, offset_ms: int, file: ArchiveFile,
                first_line: int) -> None:
    """Rows out of the file's period, off the grid, duplicate or out of order."""
    name = file.csv_name
    outside = (ts < file.start_ms) | (ts >= file.end_ms)
    if outside.any():
        raise BadArchiveFileError(name, f"open time outside {file.day} ({file.period.value})",
                                  int(outside.argmax()) + first_line)
    off = (ts - offset_ms) % tf_ms != 0
    if off.any():
        raise BadArchiveFileError(name, f"open time off the {file.interval} grid",
                                  int(off.argmax()) + first_line)
    if len(ts) > 1:
        step = ts[1:] <= ts[:-1]
        if step.any():
            row = int(step.argmax()) + 1
            what = "duplicate" if ts[row] == ts[row - 1] else "out-of-order"
            raise BadArchiveFileError(name, f"{what} open time", row + first_line)


def _first_rejected_row(table: pa.Table, source: str, symbol: str, timeframe: str,
                        now_ms: int) -> int | None:
    """First row whose prefix fails reply validation, by bisection: only on the error path,
    so the shared validation stays the one place its rules live."""

    def fails(k: int) -> bool:
        try:
            validate_candles(table.slice(0, k), source=source, symbol=symbol,
                             timeframe=timeframe, now_ms=now_ms)
        except BadReplyError:
            return True
        return False

    lo, hi = 1, table.num_rows
    with _quiet_this_thread():
        if not fails(hi):
            return None
        while lo < hi:  # smallest failing prefix length
            mid = (lo + hi) // 2
            if fails(mid):
                hi = mid
            else:
                lo = mid + 1
    return lo - 1


@contextmanager
def _quiet_this_thread() -> Iterator[None]:
    """Drop this thread's validation warnings while bisecting (the rejection is logged once)."""
    me = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return record.thread != me

    _sources_log.addFilter(keep)
    try:
        yield
    finally:
        _sources_log.removeFilter(keep)
