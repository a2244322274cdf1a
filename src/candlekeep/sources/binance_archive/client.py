"""Downloading archive files: a ZIP and its ``.CHECKSUM``, retried, verified, parsed.

Every way a file can fail ends in an ArchiveFileError naming it, which the backfill answers
by taking that range from REST: 404 (not published, or never will be), a checksum that still
differs after one refetch, a corrupt ZIP or CSV, and 5xx or timeouts that outlast the
retries. Nothing from a failed file is ever returned, so nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import httpx
import pyarrow as pa

from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.errors import TransientSourceError
from candlekeep.core.text import redact_url
from candlekeep.sources.binance_archive.parse import (
    ArchiveFileError,
    ChecksumMismatchError,
    parse_checksum,
    read_kline_zip,
)
from candlekeep.sources.binance_archive.paths import DEFAULT_BASE_URL, ArchiveFile
from candlekeep.sources.retry import RetryPolicy, call_with_retry

log = logging.getLogger("candlekeep.sources")


class ArchiveMissingError(ArchiveFileError):
    """The archive answered 404: the file is not (yet) published."""


class ArchiveUnavailableError(ArchiveFileError):
    """5xx, timeouts or connection failures that outlasted the retries."""


class _Transient(TransientSourceError):
    """One failed attempt worth retrying (internal: becomes ArchiveUnavailableError)."""


@dataclass
class ArchiveStats:
    """What the archive cost and gave: read by the backfill for its run details."""

    requests: int = 0
    files: int = 0
    bytes: int = 0
    rows: int = 0
    refetched: int = 0
    missing: int = 0
    rejected: int = 0
    unavailable: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "files": self.files, "bytes": self.bytes,
                "rows": self.rows, "refetched": self.refetched, "missing": self.missing,
                "rejected": self.rejected, "unavailable": self.unavailable}


class ArchiveClient:
    """Fetches and verifies kline files from one archive base URL.

    ``concurrency`` bounds downloads in flight across every series sharing the client, and
    so the memory held in downloaded bodies.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, concurrency: int = 4,
                 timeout_s: float = 120.0, clock: Clock | None = None,
                 retry: RetryPolicy | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        """``http``: a client to share (its owner closes it); else one of our own."""
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=10.0)
        self.stats = ArchiveStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = random.Random()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=concurrency * 2),
            follow_redirects=True)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def candles(self, file: ArchiveFile, *, source: str, symbol: str,
                      now_ms: int, contract_size: float | None = None) -> pa.Table:
        """The verified candles of ``file``; ArchiveFileError (naming it) when unusable.

        A checksum mismatch is fetched once more: a download cut by a proxy or a file being
        replaced on the CDN heals on the second try, a truly wrong file does not.
        """
        try:
            try:
                table = await self._candles_once(file, source, symbol, now_ms, contract_size)
            except ChecksumMismatchError as exc:
                log.warning("archive checksum mismatch file=%s: fetching once more",
                            exc.file_name)
                self.stats.refetched += 1
                table = await self._candles_once(file, source, symbol, now_ms, contract_size)
        except ArchiveMissingError:
            self.stats.missing += 1
            raise
        except ArchiveUnavailableError:
            self.stats.unavailable += 1
            raise
        except ArchiveFileError:
            self.stats.rejected += 1
            raise
        self.stats.files += 1
        self.stats.rows += table.num_rows
        return table

    async def _candles_once(self, file: ArchiveFile, source: str, symbol: str,
                            now_ms: int, contract_size: float | None) -> pa.Table:
        async with self._slots:
            checksum = await self._get(file.checksum_url(self.base_url),
                                       f"{file.zip_name}.CHECKSUM")
            data = await self._get(file.url(self.base_url), file.zip_name)
        self.stats.bytes += len(data) + len(checksum)
        expected = parse_checksum(checksum.decode("utf-8", "replace"), file)
        # Unzipping and parsing a month of 1m candles takes tens of milliseconds of mostly
        # GIL-free Arrow work: off the loop, so downloads and writes continue meanwhile.
        return await asyncio.to_thread(read_kline_zip, data, expected, file, source=source,
                                       symbol=symbol, now_ms=now_ms, ingested_at_ms=now_ms,
                                       contract_size=contract_size)

    async def _get(self, url: str, name: str) -> bytes:
        shown = redact_url(url)  # a mirror's credentials stay out of every message

        async def attempt() -> bytes:
            self.stats.requests += 1
            try:
                reply = await self._http.get(url)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise _Transient(redact_url(f"{type(exc).__name__}: {exc}")) from None
            except httpx.HTTPError as exc:  # a body that does not decode, redirect loops
                raise ArchiveFileError(
                    name, redact_url(f"{type(exc).__name__}: {exc} at {shown}")) from None
            if reply.status_code == 404:
                raise ArchiveMissingError(name, f"not in the archive (404 at {shown})")
            if reply.status_code == 429 or reply.status_code >= 500:
                raise _Transient(f"HTTP {reply.status_code} at {shown}")
            if reply.status_code != 200:
                raise ArchiveFileError(name, f"HTTP {reply.status_code} at {shown}")
            return reply.content

        try:
            return await call_with_retry(attempt, policy=self.retry, clock=self.clock,
                                         rng=self._rng, what=f"archive {name}")
        except _Transient as exc:
            raise ArchiveUnavailableError(name, f"{exc} (after {self.retry.max_attempts} "
                                                "attempts)") from None
