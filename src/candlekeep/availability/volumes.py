"""A published day's traded volume, from the archive's daily ``1d`` kline file.

One small ZIP and its ``.CHECKSUM`` per (symbol, date), verified and parsed by the archive
reader (``read_kline_zip``), so a volume figure comes from a file whose digest matched, or
not at all. Failures are per file and named: a missing 1d file, a checksum that still
differs after one refetch, a bad file, or 5xx that outlast the retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.availability.dataset import AVAILABILITY, VOLUME_COLUMNS
from candlekeep.availability.probe import use_lane
from candlekeep.core.clock import Clock
from candlekeep.sources.binance_archive.client import ArchiveClient
from candlekeep.sources.binance_archive.parse import ArchiveFileError
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


async def fetch_volumes(client: httpx.AsyncClient, base_url: str, market: Market,
                        wanted: Sequence[tuple[str, date]], *, concurrency: int,
                        clock: Clock, retry: RetryPolicy,
                        contract_sizes: Mapping[str, float] | None = None) -> VolumeResult:
    """The volume of each wanted (symbol, date), from its daily 1d file, through the bulk
    backfill's archive client (retries, one refetch on a checksum mismatch, verified parse)
    over the run's shared ``client``. ``contract_sizes`` (COIN-M, by symbol id) make the
    figures mean what they mean in the candle store: coin volume and USD quote volume."""
    sizes = contract_sizes or {}
    archive = ArchiveClient(base_url, concurrency=concurrency, clock=clock, retry=retry,
                            http=client)
    result = VolumeResult([], [])
    items = iter(wanted)

    async def one(symbol: str, day: date) -> None:
        f = ArchiveFile(market, symbol, VOLUME_INTERVAL, Period.DAILY, day)
        try:
            table = await archive.candles(f, source="archive", symbol=symbol,
                                          now_ms=clock.now_ms(),
                                          contract_size=sizes.get(symbol))
        except ArchiveFileError as exc:
            result.failures.append(str(exc))
            return
        if table.num_rows != 1:
            result.failures.append(f"{f.zip_name}: {table.num_rows} daily candles, "
                                   "expected 1")
            return
        result.found.append(DayVolume(
            symbol, day, float(pc.sum(table["volume"]).as_py()),
            float(pc.sum(table["quote_volume"]).as_py()),
            int(pc.sum(table["trades"]).as_py())))

    async def worker(lane: int) -> None:
        use_lane(lane)
        for symbol, day in items:
            await one(symbol, day)

    try:
        await asyncio.gather(*(worker(i)
                               for i in range(max(1, min(concurrency, len(wanted))))))
    finally:
        result.requests = archive.stats.requests
        await archive.close()
    result.found.sort(key=lambda v: (v.day, v.symbol))
    return result
