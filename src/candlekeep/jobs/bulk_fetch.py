"""The archive part of a backfill: whole files first, then only what they lack from REST.

Files are downloaded a few at a time ahead of the writer but written strictly in time order,
consecutive files in one upsert (``WRITE_ROWS``), each write followed by the series'
checkpoint at the last file's end, so a crash or a kill resumes at the first file not yet
stored, exactly like the REST path. Memory stays bounded by the files in flight plus one
batch, whatever the range.

A monthly file that cannot be used (not yet published early in a month, corrupt, a checksum
that still differs after one refetch) is replaced by that month's daily files; a daily file
that cannot be used by REST for its day. Rejections are warnings naming the file; a 404 is
routine (files appear hours to days after their period) and only logged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from candlekeep.config.source_types import CcxtSourceConfig
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period, archive_market
from candlekeep.sources.binance_archive.plan import BulkPlan, FilePiece, RestRange

if TYPE_CHECKING:
    import pyarrow as pa

    from candlekeep.jobs.facades import AsyncStore
    from candlekeep.sources.base import MarketInfo, Source
    from candlekeep.sources.binance_archive.client import ArchiveClient
    from candlekeep.sources.binance_archive.parse import ArchiveFileError


@dataclass
class SourceArchive:
    """The archive behind one configured source, for the length of one run."""

    source: str
    market: Market
    client: ArchiveClient
    lookahead: int
    async def market_info(self, source: Source, symbol: str) -> MarketInfo | None:
        """``symbol``'s market: its exchange id names the archive's folder, and an inverse
        market's contract size converts its volumes."""
        return (await source.markets()).get(symbol)


async def open_archives(ctx: JobContext, sources: Iterable[str]) -> dict[str, SourceArchive]:
    """Archives of the named sources that have ``bulk`` enabled (others use REST only)."""
    from candlekeep.sources.binance_archive.client import ArchiveClient

    out: dict[str, SourceArchive] = {}
    for name in sorted(set(sources)):
        cfg = ctx.config.sources.get(name)
        if not isinstance(cfg, CcxtSourceConfig) or cfg.bulk is None or not cfg.bulk.enabled:
            continue
        market = archive_market(cfg.exchange, cfg.market_type)
        if market is None:  # the loader refuses this; kept for configs built in code
            continue
        client = ArchiveClient(cfg.bulk.base_url, concurrency=cfg.bulk.concurrency,
                               timeout_s=cfg.bulk.timeout, clock=ctx.clock)
        out[name] = SourceArchive(name, market, client, cfg.bulk.concurrency)
    return out


async def close_archives(archives: dict[str, SourceArchive]) -> dict[str, int]:
    """Close the clients; the summed archive counters, for the run's details."""
    totals: dict[str, int] = {}
    for a in archives.values():
        for k, v in a.client.stats.as_dict().items():
            totals[k] = totals.get(k, 0) + v
        await a.client.close()
    return totals


def describe_plan(key: SeriesKey, plan: BulkPlan, rest_requests: Callable[[RestRange], int]
                  ) -> tuple[str, dict[str, object]]:
    """A dry run's line for one series, and the full file list for ``--json``."""
    monthly = [p.file for p in plan.files if p.file.period is Period.MONTHLY]
    daily = [p.file for p in plan.files if p.file.period is Period.DAILY]
    parts = []
    for label, files in (("monthly", monthly), ("daily", daily)):
        if files:
            span = files[0].zip_name if len(files) == 1 else \
                f"{files[0].zip_name} … {files[-1].zip_name}"
            parts.append(f"{len(files)} {label} file{'s' if len(files) > 1 else ''} ({span})")
    for r in plan.rest:
        n = rest_requests(r)
        parts.append(f"REST {fmt_ms(r.start_ms)} → {fmt_ms(r.end_ms)} "
                     f"(~{n} request{'' if n == 1 else 's'})")
    line = f"{key}: " + ("; ".join(parts) if parts else "nothing to fetch")
    detail: dict[str, object] = {
        "files": [p.file.zip_name for p in plan.files],
        "rest": [[fmt_ms(r.start_ms), fmt_ms(r.end_ms)] for r in plan.rest],
    }
    return line, detail


WRITE_ROWS = 500_000
"""Rows gathered from consecutive files before one upsert (about 11 months of 1m, ~50 MB of
Arrow): a DuckDB write pays an open, a commit and a checkpoint, and its per-row cost keeps
falling up to batches of this size. bench/bulk.py, 6 years of 1m (3.1M candles) ÷ DuckDB's
own read_csv of the same CSVs: one write per monthly file 2.5-3x, 250k rows 2.5x, 500k 1.7x,
1M 1.5x (2 cores; runs vary by +-20 %).
A kill loses at most this many rows of work: the checkpoint follows each write."""


@dataclass
class ArchiveWriter:
    """Writes one series' archive pieces in order; ``rest`` fills what a file cannot."""

    ctx: JobContext
    archive: SourceArchive
    key: SeriesKey
    source: Source
    store: AsyncStore
    checkpoint_job: str
    progress_key: str
    rest: Callable[[int, int], Awaitable[bool]]
    result: JobResult
    contract_size: float | None = None
    _pending: list[tuple[FilePiece, pa.Table]] = field(default_factory=list)
    _pending_rows: int = 0

    async def write(self, pieces: Iterable[FilePiece], *, split_monthly: bool = True) -> bool:
        """Store ``pieces`` in order; False when cancelled or stopped by a REST failure."""
        from candlekeep.sources.binance_archive.parse import ArchiveFileError

        queue: deque[tuple[FilePiece, asyncio.Task[pa.Table]]] = deque()
        todo = iter(pieces)

        def launch() -> None:
            piece = next(todo, None)
            if piece is not None:
                queue.append((piece, asyncio.create_task(self._load(piece.file))))

        for _ in range(max(1, self.archive.lookahead)):
            launch()
        try:
            while queue:
                piece, task = queue.popleft()
                try:
                    table: pa.Table | None = await task
                    failure: ArchiveFileError | None = None
                except ArchiveFileError as exc:
                    table, failure = None, exc
                launch()
                if self.ctx.cancel.is_set():
                    await self.flush()
                    self.result.warnings.append(
                        f"{self.key}: cancelled at {fmt_ms(piece.start_ms)}")
                    return False
                if table is not None:
                    await self._store(piece, table)
                    continue
                assert failure is not None
                if not (piece.file.period is Period.MONTHLY and split_monthly):
                    await self.flush()  # REST writes next: keep the checkpoint in order
                if not await self._replace(piece, failure, split_monthly):
                    return False
            if split_monthly:
                await self.flush()
        finally:
            for _, t in queue:
                t.cancel()
            await asyncio.gather(*(t for _, t in queue), return_exceptions=True)
        return True

    async def _load(self, file: ArchiveFile) -> pa.Table:
        return await self.archive.client.candles(
            file, source=self.key.source, symbol=self.key.symbol,
            now_ms=self.ctx.clock.now_ms(), contract_size=self.contract_size)

    async def _store(self, piece: FilePiece, table: pa.Table) -> None:
        """Queue ``piece``'s rows; written once a batch is large enough (see WRITE_ROWS)."""
        import pyarrow.compute as pc

        if piece.start_ms > piece.file.start_ms or piece.end_ms < piece.file.end_ms:
            ts = pc.cast(table["ts"], "int64")
            table = table.filter(pc.and_(pc.greater_equal(ts, piece.start_ms),
                                         pc.less(ts, piece.end_ms)))
        self._pending.append((piece, table))
        self._pending_rows += table.num_rows
        if self._pending_rows >= WRITE_ROWS:
            await self.flush()

    async def flush(self) -> None:
        """Write the queued pieces in one upsert, then checkpoint the last one's end."""
        if not self._pending:
            return
        import pyarrow as pa

        pieces, tables = zip(*self._pending, strict=True)
        self._pending, self._pending_rows = [], 0
        batch = pa.concat_tables(t for t in tables if t.num_rows) \
            if any(t.num_rows for t in tables) else None
        if batch is not None:
            self.result.rows_written += await self.store.upsert_candles(batch)
        await self.ctx.db.set_checkpoint(self.checkpoint_job, self.key, pieces[-1].end_ms,
                                         self.ctx.clock.now_ms())
        tf = parse_timeframe(self.key.timeframe)
        self.ctx.progress.advance(self.progress_key, sum(tf.count(p.start_ms, p.end_ms)
                                                         for p in pieces))

    async def _replace(self, piece: FilePiece, failure: ArchiveFileError,
                       split_monthly: bool) -> bool:
        from candlekeep.sources.binance_archive.client import ArchiveMissingError

        missing = isinstance(failure, ArchiveMissingError)
        log = self.ctx.log.info if missing else self.ctx.log.warning
        if split_monthly and piece.file.period is Period.MONTHLY:
            log("series=%s %s: using daily files", self.key, failure)
            if not missing:
                self.result.warnings.append(f"{self.key}: {failure}; used daily files")
            return await self.write(_daily_pieces(piece), split_monthly=False)
        log("series=%s %s: fetching %s → %s through REST", self.key, failure,
            fmt_ms(piece.start_ms), fmt_ms(piece.end_ms))
        if not missing:
            self.result.warnings.append(
                f"{self.key}: {failure}; fetched {fmt_ms(piece.start_ms)} → "
                f"{fmt_ms(piece.end_ms)} through REST")
        return await self.rest(piece.start_ms, piece.end_ms)


def _daily_pieces(piece: FilePiece) -> list[FilePiece]:
    f = piece.file
    out: list[FilePiece] = []
    day = f.day
    while True:
        d = ArchiveFile(f.market, f.symbol_id, f.interval, Period.DAILY, day)
        if d.start_ms >= piece.end_ms:
            break
        if d.end_ms > piece.start_ms:
            out.append(FilePiece(d, max(piece.start_ms, d.start_ms),
                                 min(piece.end_ms, d.end_ms)))
        day += timedelta(days=1)
    return out


__all__ = ["ArchiveWriter", "SourceArchive", "close_archives", "describe_plan",
           "open_archives"]
