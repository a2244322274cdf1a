"""A published day's traded volume, from the archive's daily ``1d`` kline file.

One small ZIP and its ``.CHECKSUM`` per (symbol, date), verified and parsed by the archive
reader (``read_kline_zip``), so a volume figure comes from a file whose digest matched, or
not at all. Failures are per file and named: a missing 1d file, a checksum that still
differs after one refetch, a bad file, or 5xx that outlast the retries.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.availability.dataset import AVAILABILITY, VOLUME_COLUMNS
from candlekeep.availability.probe import use_lane
from candlekeep.core.clock import Clock
from candlekeep.sources.binance_archive.parse import (
    ArchiveFileError,
    ChecksumMismatchError,
    parse_checksum,
    read_kline_zip,
)
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period
from candlekeep.sources.retry import RetryPolicy

VOLUME_INTERVAL = "1d"


@dataclass(frozen=True, slots=True)
class DayVolume:
    symbol: str
    day: date
    volume: float
    quote_volume: float
    trades: int


@dataclass
class VolumeResult:
    found: list[DayVolume]
    failures: list[str]
    requests: int = 0

    def batch(self, market: Market) -> pa.Table:
        """The volume columns only: a partial upsert that leaves the probe's columns be."""
        rows = self.found
        return pa.table({
            "market": pa.array([market.value] * len(rows), pa.string()),
            "date": pa.array([r.day for r in rows], pa.date32()),
            "symbol": pa.array([r.symbol for r in rows], pa.string()),
            "volume": pa.array([r.volume for r in rows], pa.float64()),
            "quote_volume": pa.array([r.quote_volume for r in rows], pa.float64()),
            "trades": pa.array([r.trades for r in rows], pa.int64()),
        }, schema=pa.schema([AVAILABILITY.schema.field(c) for c in VOLUME_COLUMNS]))


class _Failed(Exception):
    pass


async def fetch_volumes(client: httpx.AsyncClient, base_url: str, market: Market,
                        wanted: Sequence[tuple[str, date]], *, concurrency: int,
                        clock: Clock, retry: RetryPolicy,
                        rng: random.Random | None = None) -> VolumeResult:
    """The volume of each wanted (symbol, date), from its daily 1d file."""
    rng = rng or random.Random()
    result = VolumeResult([], [])
    items = iter(wanted)

    async def get(url: str) -> bytes | None:
        """The body, None on 404; _Failed once retries are spent."""
        attempt = 1
        while True:
            result.requests += 1
            try:
                reply = await client.get(url)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code == 200:
                    return reply.content
                if reply.status_code == 404:
                    return None
                why = f"HTTP {reply.status_code}"
            if attempt >= retry.max_attempts:
                raise _Failed(f"{why} at {url} (after {attempt} attempts)")
            await clock.sleep(retry.backoff_s(attempt, rng))
            attempt += 1

    async def one(symbol: str, day: date) -> None:
        f = ArchiveFile(market, symbol, VOLUME_INTERVAL, Period.DAILY, day)
        for refetch in (False, True):
            try:
                checksum = await get(f.checksum_url(base_url))
                data = await get(f.url(base_url))
                if checksum is None or data is None:
                    url = f.checksum_url(base_url) if checksum is None else f.url(base_url)
                    result.failures.append(f"{f.zip_name}: not in the archive (404 at {url})")
                    return
                expected = parse_checksum(checksum.decode("utf-8", "replace"), f)
                table = await asyncio.to_thread(
                    read_kline_zip, data, expected, f, source="archive", symbol=symbol,
                    now_ms=clock.now_ms(), ingested_at_ms=clock.now_ms())
            except ChecksumMismatchError as exc:
                if not refetch:
                    continue  # a transfer cut or a file being replaced: once more
                result.failures.append(str(exc))
                return
            except ArchiveFileError as exc:
                result.failures.append(str(exc))
                return
            except _Failed as exc:
                result.failures.append(f"{f.zip_name}: {exc}")
                return
            if table.num_rows != 1:
                result.failures.append(f"{f.zip_name}: {table.num_rows} daily candles, "
                                       "expected 1")
                return
            result.found.append(DayVolume(
                symbol, day, float(pc.sum(table["volume"]).as_py()),
                float(pc.sum(table["quote_volume"]).as_py()),
                int(pc.sum(table["trades"]).as_py())))
            return

    async def worker(lane: int) -> None:
        use_lane(lane)
        for symbol, day in items:
            await one(symbol, day)

    await asyncio.gather(*(worker(i) for i in range(max(1, min(concurrency, len(wanted))))))
    result.found.sort(key=lambda v: (v.day, v.symbol))
    return result
