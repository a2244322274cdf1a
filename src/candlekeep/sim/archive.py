"""The simulated exchange's public-data archive, shaped like Binance's ``data.binance.vision``.

Paths, file names, ZIP layout, ``.CHECKSUM`` files and the S3 bucket listing follow the real
archive, so the bulk-backfill client and the availability tracker run against it unchanged
(only their base URLs are swapped). Candles come from the same generator and hole model the
REST endpoints use, so a file and a klines reply for the same range agree exactly.

The real archive's quirks are reproduced by date, as Binance has them: spot files switched
from millisecond to microsecond timestamps on 2025-01-01, futures files gained a header row
in 2022 (``ArchiveSpec`` holds both switch dates), COIN-M files count volume in contracts
and name their columns after it. Failures are scripted per file with
``ArchiveFault``: missing or late files, a wrong CHECKSUM, a truncated ZIP, a bad number,
another period's rows, 5xx and slow replies, and a listing page cut short.

ZIPs are built on request, in memory, with fixed member timestamps, so the same file always
has the same bytes and the same SHA-256; a small LRU keeps the recent ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import formatdate
from enum import StrEnum
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from candlekeep.core.timeframes import DAY_MS, TIMEFRAMES, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import Api, SimExchange
from candlekeep.sim.generator import CandleArrays

BUCKET = "data.binance.vision"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
CSV_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
              "taker_buy_volume,taker_buy_quote_volume,ignore")
CSV_HEADER_COINM = ("open_time,open,high,low,close,volume,close_time,base_asset_volume,count,"
                    "taker_buy_volume,taker_buy_base_asset_volume,ignore")
"""COIN-M: ``volume`` and ``taker_buy_volume`` are contracts, columns 7 and 10 the coin."""
CHECKSUM_SUFFIX = ".CHECKSUM"


class Market(StrEnum):
    """The archive's market folders under ``data/``."""

    SPOT = "spot"
    UM = "futures/um"
    CM = "futures/cm"


_API_OF: dict[Market, Api] = {Market.SPOT: "spot", Market.UM: "fapi", Market.CM: "dapi"}
"""The REST API whose markets (and candles) each archive market serves."""


class Period(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


class FaultKind(StrEnum):
    MISSING = "missing"  # 404 for the zip and its CHECKSUM; absent from the listing
    BAD_CHECKSUM = "bad_checksum"  # the CHECKSUM names another digest
    TRUNCATED = "truncated"  # the zip (or a listing page) cut in half
    BAD_NUMBER = "bad_number"  # one row's close is not a number
    WRONG_DATE = "wrong_date"  # the previous period's rows under this file's name
    ERROR = "error"  # a 5xx reply
    SLOW = "slow"  # the reply waits ``delay_s`` (real seconds)


@dataclass(frozen=True, slots=True)
class ArchiveFault:
    """One scripted failure.

    ``path`` is a key prefix: ``data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-15``
    hits that zip and its CHECKSUM, ``data/futures/um/`` every USDⓈ-M file, ``""`` all.
    With ``listing`` the fault hits listing replies whose ``prefix`` starts with ``path``
    instead (ERROR, SLOW, TRUNCATED). ``times`` limits how many requests it changes (then
    the file is served normally, as after a retry); ``until_ms`` ends it at a time on the
    exchange's clock (a MISSING file that arrives late).
    """

    kind: FaultKind
    path: str = ""
    times: int | None = None
    until_ms: int | None = None
    status: int = 503
    delay_s: float = 0.5
    listing: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """How the archive behaves; the defaults are the real archive's."""

    faults: tuple[ArchiveFault, ...] = ()
    page_size: int = 1000  # S3's max-keys cap
    daily_delay_ms: int = 0  # a day's file appears this long after the day ends
    monthly_delay_ms: int = 0
    spot_micros_from_ms: int = to_ms("2025-01-01")
    futures_header_from_ms: int = to_ms("2022-05-01")
    intervals: tuple[str, ...] = tuple(TIMEFRAMES)  # the interval folders listed
    cache_files: int = 32
    cache_sizes: int = 1_000_000  # (size, MD5) of files built once: what HEAD answers from


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One klines file of the archive; ``start_ms``..``end_ms`` is the period it covers."""

    market: Market
    period: Period
    symbol_id: str
    interval: str
    label: str  # 2024-01-15 or 2024-01
    start_ms: int
    end_ms: int

    @property
    def folder(self) -> str:
        return (f"data/{self.market}/{self.period}/klines/{self.symbol_id}/"
                f"{self.interval}/")

    @property
    def stem(self) -> str:
        return f"{self.symbol_id}-{self.interval}-{self.label}"

    @property
    def zip_name(self) -> str:
        return f"{self.stem}.zip"

    @property
    def key(self) -> str:
        return self.folder + self.zip_name

    def previous(self) -> ArchiveFile:
        """The period before this one (for the wrong-date fault)."""
        start = _ms_to_date(self.start_ms)
        if self.period is Period.DAILY:
            return _file(self.market, self.period, self.symbol_id, self.interval,
                         start - timedelta(days=1))
        return _file(self.market, self.period, self.symbol_id, self.interval,
                     (start - timedelta(days=1)).replace(day=1))


@dataclass(frozen=True, slots=True)
class Built:
    """A file's bytes as served and what its CHECKSUM and headers say about it."""

    body: bytes
    sha256: str
    md5: str


@dataclass(frozen=True, slots=True)
class _Series:
    """The exchange market a folder serves (its candles, holes and dates are the REST ones)."""

    symbol: str
    listing_ms: int
    delisting_ms: int | None = None
    contract_size: float | None = None  # COIN-M: its volumes count contracts


def _ms_to_date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _date_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _file(market: Market, period: Period, symbol_id: str, interval: str,
          start: date) -> ArchiveFile:
    if period is Period.DAILY:
        end = start + timedelta(days=1)
        label = start.isoformat()
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        label = start.isoformat()[:7]
    return ArchiveFile(market, period, symbol_id, interval, label, _date_ms(start),
                       _date_ms(end))


def parse_key(key: str) -> tuple[ArchiveFile, bool] | None:
    """``(file, is_checksum)`` for a klines key of the archive, None for anything else."""
    if not key.startswith("data/"):
        return None
    rest = key[5:]
    market = next((m for m in (Market.UM, Market.CM, Market.SPOT)
                   if rest.startswith(f"{m}/")), None)
    if market is None:
        return None
    parts = rest[len(market) + 1:].split("/")
    if len(parts) != 5 or parts[1] != "klines" or parts[0] not in ("daily", "monthly"):
        return None
    period, symbol_id, interval, name = Period(parts[0]), parts[2], parts[3], parts[4]
    is_checksum = name.endswith(CHECKSUM_SUFFIX)
    if is_checksum:
        name = name[: -len(CHECKSUM_SUFFIX)]
    head = f"{symbol_id}-{interval}-"
    if not (name.startswith(head) and name.endswith(".zip")):
        return None
    label = name[len(head):-4]
    try:
        if period is Period.DAILY:
            start = date.fromisoformat(label)
        else:
            start = date.fromisoformat(label + "-01")
    except ValueError:
        return None
    f = _file(market, period, symbol_id, interval, start)
    return (f, is_checksum) if f.label == label else None


def kline_fields(arrays: CandleArrays, tf_ms: int, time_scale: int = 1,
                 contract_size: float | None = None) -> list[pa.Array]:
    """Binance's 12 kline fields as string columns, shared by REST JSON and archive CSV.

    ``time_scale`` 1000 gives the microsecond open and close times of newer spot files.
    Arrow's string cast writes the shortest round-trip text of each float. With
    ``contract_size`` (COIN-M) the layout is the inverse one: column 5 the number of
    contracts (``quote_volume / contract_size``, whole by ``SimExchange.candle_arrays``),
    column 7 the base asset volume, 9 the taker buy contracts, 10 the taker buy base volume.
    """
    a = arrays
    if contract_size is None:
        volume, turnover = _strings(a.volume), _strings(a.quote_volume)
        taker_volume = _strings(np.round(a.volume * 0.5, 5))
        taker_turnover = _strings(np.round(a.quote_volume * 0.5, 4))
    else:
        contracts = np.round(a.quote_volume / contract_size).astype(np.int64)
        volume, turnover = _strings(contracts), _strings(a.volume)
        taker_volume = _strings(contracts // 2)
        taker_turnover = _strings(np.round(a.volume * 0.5, 8))
    return [_strings(a.ts * time_scale), _strings(a.open), _strings(a.high),
            _strings(a.low), _strings(a.close), volume,
            _strings((a.ts + tf_ms) * time_scale - 1), turnover,
            _strings(a.trades), taker_volume, taker_turnover,
            pa.array(["0"] * len(a), pa.string())]


def _strings(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class SimArchive:
    """The archive's content model and its HTTP endpoints for one SimExchange."""

    def __init__(self, exchange: SimExchange, spec: ArchiveSpec | None = None) -> None:
        self.exchange = exchange
        self.spec = spec or ArchiveSpec()
        self._series: dict[Market, dict[str, _Series]] = {m: {} for m in Market}
        # Delisted markets too, those exchangeInfo no longer shows included: their files stay.
        for market, api in _API_OF.items():
            for m in exchange.markets(api):
                self._series[market][m.market_id] = _Series(m.symbol, m.listing_ms,
                                                            m.delisting_ms, m.contract_size)
        self._lock = threading.Lock()
        self._used: dict[int, int] = {}
        self._cache: OrderedDict[tuple[str, FaultKind | None], Built] = OrderedDict()
        # Sizes outlive the bodies: a HEAD (the availability tracker's probe) answers from
        # here after one build, where building a 1m day takes about 10 ms.
        self._sizes: dict[tuple[str, FaultKind | None], tuple[int, str]] = {}
        self.requests = 0

    # ----------------------------------------------------------------- content

    def published_ms(self, f: ArchiveFile) -> int:
        """When the file appears (and its Last-Modified): after its period has ended."""
        delay = (self.spec.daily_delay_ms if f.period is Period.DAILY
                 else self.spec.monthly_delay_ms)
        return f.end_ms + delay

    def exists(self, f: ArchiveFile) -> bool:
        """True when a request for the file would be served (scripted faults aside)."""
        series = self._series[f.market].get(f.symbol_id)
        if series is None or f.interval not in TIMEFRAMES:
            return False
        listing_day = DAY_MS * (series.listing_ms // DAY_MS)
        if series.delisting_ms is not None and f.start_ms >= series.delisting_ms:
            return False  # files stop after the delisting
        return f.end_ms > listing_day and self.published_ms(f) <= self.exchange.clock.now_ms()

    def candles(self, f: ArchiveFile) -> CandleArrays:
        """The candles the file holds: every existing candle opening inside its period."""
        series = self._series[f.market][f.symbol_id]
        tf = parse_timeframe(f.interval)
        ts = np.arange(tf.ceil(f.start_ms), f.end_ms, tf.ms, dtype=np.int64)
        ts = ts[~self.exchange.hole_mask(series.symbol, f.interval, ts)]
        return self.exchange.candle_arrays(series.symbol, f.interval, ts)

    def uses_micros(self, f: ArchiveFile) -> bool:
        return f.market is Market.SPOT and f.start_ms >= self.spec.spot_micros_from_ms

    def has_header(self, f: ArchiveFile) -> bool:
        return f.market is not Market.SPOT and f.start_ms >= self.spec.futures_header_from_ms

    def csv_bytes(self, f: ArchiveFile, fault: FaultKind | None = None) -> bytes:
        rows_of = f.previous() if fault is FaultKind.WRONG_DATE else f
        fields = kline_fields(self.candles(rows_of), TIMEFRAMES[f.interval],
                              1000 if self.uses_micros(f) else 1,
                              self._series[f.market][f.symbol_id].contract_size)
        rows: list[str] = (pc.binary_join_element_wise(*fields, ",").to_pylist()
                           if len(fields[0]) else [])
        if fault is FaultKind.BAD_NUMBER and rows:
            cells = rows[len(rows) // 2].split(",")
            cells[4] = cells[4] + "x"
            rows[len(rows) // 2] = ",".join(cells)
        if self.has_header(f):
            rows.insert(0, CSV_HEADER_COINM if f.market is Market.CM else CSV_HEADER)
        return "".join(row + "\n" for row in rows).encode()

    def build(self, f: ArchiveFile, fault: FaultKind | None = None) -> Built:
        """The zip (one CSV named like it), cached; identical bytes on every call."""
        cache_key = (f.key, fault)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
                return hit
        published = datetime.fromtimestamp(self.published_ms(f) / 1000, UTC)
        info = zipfile.ZipInfo(f.stem + ".csv", date_time=published.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            # Deflate level 1: five times faster than the default for 8 % more bytes, so
            # the sim is not what a bulk or HEAD-probe benchmark measures.
            zf.writestr(info, self.csv_bytes(f, fault), compresslevel=1)
        body = buf.getvalue()
        built = Built(body, hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest())
        with self._lock:
            self._cache[cache_key] = built
            while len(self._cache) > self.spec.cache_files:
                self._cache.popitem(last=False)
            if cache_key not in self._sizes:
                if len(self._sizes) >= self.spec.cache_sizes:
                    del self._sizes[next(iter(self._sizes))]
                self._sizes[cache_key] = (len(body), built.md5)
        return built

    def size_and_md5(self, f: ArchiveFile, fault: FaultKind | None = None) -> tuple[int, str]:
        """The zip's length and MD5 (its ETag) as ``build`` makes it: remembered for every
        file built, so only the first HEAD of a file pays for building it."""
        with self._lock:
            known = self._sizes.get((f.key, fault))
        if known is None:
            built = self.build(f, fault)
            known = (len(built.body), built.md5)
        return known

    def checksum_text(self, f: ArchiveFile, digest: str) -> bytes:
        return f"{digest}  {f.zip_name}\n".encode()

    # ----------------------------------------------------------------- faults

    def _fault(self, kinds: tuple[FaultKind, ...], key: str, *, listing: bool = False,
               consume: bool = True) -> ArchiveFault | None:
        """The first active fault of ``kinds`` matching ``key``; counts it when ``consume``."""
        now = self.exchange.clock.now_ms()
        with self._lock:
            for i, fault in enumerate(self.spec.faults):
                if (fault.kind not in kinds or fault.listing != listing
                        or not key.startswith(fault.path)
                        or (fault.until_ms is not None and now >= fault.until_ms)
                        or (fault.times is not None and self._used.get(i, 0) >= fault.times)):
                    continue
                if consume:
                    self._used[i] = self._used.get(i, 0) + 1
                return fault
        return None

    # ----------------------------------------------------------------- files over HTTP

    async def serve_file(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        key = "data/" + request.path_params["key"]
        parsed = parse_key(key)
        if parsed is None or not self.exists(parsed[0]):
            return _not_found(key)
        f, is_checksum = parsed
        transport = self._fault((FaultKind.MISSING, FaultKind.ERROR, FaultKind.SLOW), f.key)
        if transport is not None:
            if transport.kind is FaultKind.MISSING:
                return _not_found(key)
            if transport.kind is FaultKind.ERROR:
                return Response(b"<Error><Code>InternalError</Code></Error>",
                                status_code=transport.status, media_type="application/xml")
            await asyncio.sleep(transport.delay_s)
        head = request.method == "HEAD"
        content = self._fault((FaultKind.WRONG_DATE, FaultKind.BAD_NUMBER), f.key,
                              consume=not (is_checksum or head))
        kind = content.kind if content else None
        if head and not is_checksum:
            # A HEAD transfers no body: no ZIP is built once its size is known, and the
            # body faults (a cut transfer) do not apply.
            with self._lock:
                known = self._sizes.get((f.key, kind))
            if known is None:
                known = await run_in_threadpool(self.size_and_md5, f, kind)
            size, md5 = known
            return Response(b"", media_type="application/zip", headers={
                "Content-Length": str(size), "Last-Modified": _http_date(self.published_ms(f)),
                "ETag": f'"{md5}"'})
        built = await run_in_threadpool(self.build, f, kind)
        headers = {"Last-Modified": _http_date(self.published_ms(f)),
                   "ETag": f'"{built.md5}"'}
        if is_checksum:
            digest = built.sha256
            if self._fault((FaultKind.BAD_CHECKSUM,), f.key) is not None:
                digest = hashlib.sha256(built.body + b"bad").hexdigest()
            return Response(self.checksum_text(f, digest), headers=headers,
                            media_type="application/octet-stream")
        body = built.body
        if self._fault((FaultKind.TRUNCATED,), f.key) is not None:
            body = body[: len(body) // 2]
        return Response(body, headers=headers, media_type="application/zip")

    # ----------------------------------------------------------------- the S3 listing

    def _children(self, folder: str) -> list[str]:
        """Keys directly inside ``folder`` (sub-folders end with "/")."""
        if folder == "":
            return ["data/"]
        if folder == "data/":
            return ["data/futures/", "data/spot/"]
        if folder == "data/futures/":
            return ["data/futures/cm/", "data/futures/um/"]
        market = next((m for m in Market if folder.startswith(f"data/{m}/")), None)
        if market is None:
            return []
        parts = folder[len(f"data/{market}/"):].split("/")[:-1]
        if not parts:
            return [f"{folder}{p}/" for p in Period]
        if parts[0] not in ("daily", "monthly"):
            return []
        period = Period(parts[0])
        if len(parts) == 1:
            return [folder + "klines/"]
        if parts[1] != "klines":
            return []
        if len(parts) == 2:
            return [f"{folder}{sid}/" for sid in self._series[market]
                    if self._first_file(market, period, sid) is not None]
        if len(parts) == 3:
            return ([f"{folder}{i}/" for i in self.spec.intervals]
                    if parts[2] in self._series[market] else [])
        if len(parts) == 4:
            return [k for f in self._files(market, period, parts[2], parts[3])
                    for k in (f.key, f.key + CHECKSUM_SUFFIX)]
        return []

    def _first_file(self, market: Market, period: Period, symbol_id: str,
                    interval: str = "1d") -> ArchiveFile | None:
        start = _ms_to_date(self._series[market][symbol_id].listing_ms)
        if period is Period.MONTHLY:
            start = start.replace(day=1)
        first = _file(market, period, symbol_id, interval, start)
        return first if self.exists(first) else None

    def _files(self, market: Market, period: Period, symbol_id: str,
               interval: str) -> Iterator[ArchiveFile]:
        if symbol_id not in self._series[market] or interval not in self.spec.intervals:
            return
        f = self._first_file(market, period, symbol_id, interval)
        while f is not None and self.exists(f):
            if self._fault((FaultKind.MISSING,), f.key, consume=False) is None:
                yield f
            f = _file(market, period, symbol_id, interval, _ms_to_date(f.end_ms))

    def _walk(self, folder: str, prefix: str) -> Iterator[str]:
        """Every file key under ``folder`` that starts with ``prefix`` (no delimiter)."""
        for child in self._children(folder):
            if child.endswith("/"):
                if child.startswith(prefix) or prefix.startswith(child):
                    yield from self._walk(child, prefix)
            elif child.startswith(prefix):
                yield child

    def _size_and_md5(self, key: str) -> tuple[int, str]:
        parsed = parse_key(key)
        assert parsed is not None
        f, is_checksum = parsed
        if not is_checksum:
            return self.size_and_md5(f)
        text = self.checksum_text(f, self.build(f).sha256)
        return len(text), hashlib.md5(text).hexdigest()

    def listing_xml(self, prefix: str, delimiter: str, marker: str, max_keys: int) -> str:
        if delimiter == "/":
            folder = prefix[: prefix.rfind("/") + 1]
            entries = [k for k in self._children(folder) if k.startswith(prefix)]
        else:
            entries = list(self._walk("", prefix))
        entries.sort(key=lambda k: k.encode())
        entries = [k for k in entries if k.encode() > marker.encode()]
        page, truncated = entries[:max_keys], len(entries) > max_keys
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n',
               f'<ListBucketResult xmlns="{S3_NS}"><Name>{BUCKET}</Name>',
               f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"]
        if truncated and delimiter:
            out.append(f"<NextMarker>{escape(page[-1])}</NextMarker>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if delimiter:
            out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        for key in page:
            if key.endswith("/"):
                continue
            size, md5 = self._size_and_md5(key)
            parsed = parse_key(key)
            assert parsed is not None
            out.append(f"<Contents><Key>{escape(key)}</Key>"
                       f"<LastModified>{_iso(self.published_ms(parsed[0]))}</LastModified>"
                       f'<ETag>"{md5}"</ETag><Size>{size}</Size>'
                       f"<StorageClass>STANDARD</StorageClass></Contents>")
        for key in page:
            if key.endswith("/"):
                out.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        return "".join(out)

    async def serve_listing(self, request: Request) -> Response:
        q = request.query_params
        prefix = q.get("prefix", "")
        try:
            max_keys = min(self.spec.page_size, int(q.get("max-keys", "1000")))
        except ValueError:
            return Response(b"<Error><Code>InvalidArgument</Code></Error>", status_code=400,
                            media_type="application/xml")
        fault = self._fault((FaultKind.ERROR, FaultKind.SLOW, FaultKind.TRUNCATED), prefix,
                            listing=True)
        if fault is not None and fault.kind is FaultKind.ERROR:
            return Response(b"<Error><Code>InternalError</Code></Error>",
                            status_code=fault.status, media_type="application/xml")
        if fault is not None and fault.kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay_s)
        body = (await run_in_threadpool(self.listing_xml, prefix, q.get("delimiter", ""),
                                        q.get("marker", ""), max(1, max_keys))).encode()
        if fault is not None and fault.kind is FaultKind.TRUNCATED:
            body = body[: len(body) // 2]
        return Response(body, media_type="application/xml")

    def routes(self) -> list[Route]:
        """``/data/...`` files (GET and HEAD) and the bucket listing ``/data.binance.vision``."""
        return [Route("/data/{key:path}", self.serve_file, methods=["GET", "HEAD"]),
                Route(f"/{BUCKET}", self.serve_listing, methods=["GET"])]


def _not_found(key: str) -> Response:
    body = (f"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist."
            f"</Message><Key>{escape(key)}</Key></Error>").encode()
    return Response(body, status_code=404, media_type="application/xml")


__all__ = [
    "ArchiveFault",
    "ArchiveFile",
    "ArchiveSpec",
    "FaultKind",
    "Market",
    "Period",
    "SimArchive",
    "kline_fields",
    "parse_key",
]
