"""Fetch a range of one series into its store, chunk by chunk, checkpointing each durable write.

Backfill and ingest differ only in where they start; both go through ``sync_series``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from candlekeep.core.errors import SourceError
from candlekeep.core.tasks import gather_all
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult
from candlekeep.jobs.bulk_fetch import ArchiveWriter, SourceArchive, describe_plan
from candlekeep.jobs.fallback import falls_back, fill_from_fallback
from candlekeep.jobs.runtime import SeriesPlan
from candlekeep.sources.base import describe_horizon
from candlekeep.sources.binance_archive.plan import RestRange, plan_range
from candlekeep.state.statuses import HORIZON_CHECKPOINT

PAGES_PER_WRITE = 8
"""Pages fetched (concurrently, within the rate budget) between two durable writes: large
enough to keep the budget busy, small enough that a crash loses little work."""


@dataclass(frozen=True, slots=True)
class SyncRange:
    plan: SeriesPlan
    start_ms: int
    end_ms: int  # exclusive; never past the newest closed candle
    probe_listing: bool  # True when no data is known yet: start at the listing if later


async def sync_series(ctx: JobContext, rng: SyncRange, checkpoint_job: str,
                      archive: SourceArchive | None = None) -> JobResult:
    """Fetch ``[start, end)`` of one series; each chunk is upserted, then checkpointed.

    A failure leaves every earlier chunk stored and the checkpoint just past it, so a rerun
    resumes exactly there. With an ``archive`` (a Binance source with ``bulk``), the past
    comes from its files first and only the rest through REST.
    """
    plan, res = rng.plan, JobResult()
    key = plan.key
    tf = parse_timeframe(key.timeframe)
    source = await ctx.source(key.source)
    store = await ctx.store(plan.store)
    cursor, end = tf.ceil(rng.start_ms), rng.end_ms
    progress_key = str(key)
    page = source.page_limit(key.timeframe)
    done_to = cursor  # the primary has stored (and checkpointed) everything before this
    listing_known = not rng.probe_listing

    async def rest(lo: int, hi: int) -> bool:
        """REST from ``lo`` to ``hi``, checkpointing each write; False if cancelled."""
        nonlocal done_to
        chunk_ms = page * PAGES_PER_WRITE * tf.ms
        while lo < hi:
            if ctx.cancel.is_set():
                res.warnings.append(f"{key}: cancelled at {fmt_ms(lo)}")
                return False
            chunk_end = min(lo + chunk_ms, hi)
            batch = await source.fetch_candles(key.symbol, key.timeframe, lo, chunk_end)
            if batch.num_rows:
                res.rows_written += await store.upsert_candles(batch)
            await ctx.db.set_checkpoint(checkpoint_job, key, chunk_end, ctx.clock.now_ms())
            ctx.progress.advance(progress_key, tf.count(lo, chunk_end))
            lo = done_to = chunk_end
        return True

    def requests(r: RestRange) -> int:
        return -(-tf.count(r.start_ms, r.end_ms) // page)

    try:
        horizon = source.horizon_ms(key.timeframe)
        if horizon is not None and cursor < horizon:
            # Older candles cannot be had from this exchange at all: say so once, remember
            # it for coverage, and start where its history does instead of probing further.
            res.warnings.append(f"{key}: {describe_horizon(source, key.timeframe)}; history "
                                f"from {fmt_ms(cursor)} to {fmt_ms(horizon)} cannot be "
                                "fetched, so it starts at the exchange's horizon")
            if not ctx.dry_run:
                await ctx.db.set_checkpoint(HORIZON_CHECKPOINT, key, horizon,
                                         ctx.clock.now_ms())
            cursor = done_to = horizon
        if cursor >= end:
            return res
        if rng.probe_listing:
            first = await source.first_candle_ms(key.symbol, key.timeframe, cursor)
            listing_known = True
            if first is None or first >= end:
                res.warnings.append(f"{key}: no candles at or after {fmt_ms(cursor)}")
                return res
            if first > cursor:
                ctx.log.info("series=%s starts at listing %s, not %s", key, fmt_ms(first),
                             fmt_ms(cursor))
                cursor = done_to = first
        bulk, market = None, None
        if archive is not None:
            market = await archive.market_info(source, key.symbol)
            if market is None or market.market_id is None:
                res.warnings.append(f"{key}: exchange id unknown, so no archive files: REST")
            else:
                bulk = plan_range(archive.market, market.market_id, key.timeframe, cursor,
                                  end, ctx.clock.now_ms())
        total = tf.count(cursor, end)
        ctx.progress.start(progress_key, total, str(key))
        if ctx.dry_run:
            if bulk is not None:
                line, detail = describe_plan(key, bulk, requests)
                res.details["archive_plan"] = {str(key): detail}
            else:
                line = f"{key}: {total} candles {fmt_ms(cursor)} → {fmt_ms(end)} " \
                       f"in ~{requests(RestRange(cursor, end))} requests"
            res.details["plan"] = line
            ctx.log.info("dry-run %s", line)
            return res
        if archive is not None and bulk is not None and bulk.files:
            writer = ArchiveWriter(ctx, archive, key, source, store, checkpoint_job,
                                   progress_key, rest, res,
                                   market.contract_size if market is not None else None)
            if not await writer.write(bulk.files):
                return res
            cursor = bulk.files[-1].end_ms
        await rest(cursor, end)
    except SourceError as exc:
        if plan.fallback and falls_back(exc) and not ctx.dry_run:
            # Archive files move the checkpoint without passing through ``rest``.
            stored_to = await ctx.db.get_checkpoint(checkpoint_job, key)
            if stored_to is not None and done_to < stored_to <= end:
                done_to = stored_to
        if plan.fallback and falls_back(exc) and not ctx.dry_run and done_to < end:
            try:
                await fill_from_fallback(ctx, plan, done_to, end, exc, checkpoint_job, res,
                                         not listing_known)
                return res
            except SourceError as fb_exc:
                exc = fb_exc
        ctx.log.error("series=%s failed at=%s error=%s", key, fmt_ms(done_to), exc)
        res.errors.append(f"{key}: {exc}")
    finally:
        ctx.progress.finish(progress_key)
    return res


async def sync_all(
    ctx: JobContext, ranges: list[SyncRange], checkpoint_job: str, concurrency: int,
    archives: Mapping[str, SourceArchive] | None = None,
) -> JobResult:
    """Run ``sync_series`` over many series, ``concurrency`` at a time; the source's rate
    limiter keeps the combined pace within the exchange's budget (and the archive client's
    download slots bound the files in flight)."""
    archives = archives or {}
    sem = asyncio.Semaphore(max(1, concurrency))
    total = JobResult()

    async def one(rng: SyncRange) -> JobResult:
        async with sem:
            return await sync_series(ctx, rng, checkpoint_job,
                                     archives.get(rng.plan.key.source))

    plans, files, fallbacks = [], {}, []
    # A series that crashes (not a SourceError, which it reports) stops the others before
    # the caller closes what they share (the archive clients).
    for r in await gather_all([one(r) for r in ranges]):
        total.merge(r)
        if "plan" in r.details:
            plans.append(r.details["plan"])
        files.update(r.details.get("archive_plan", {}))
        fallbacks += r.details.get("fallback", [])
    total.details["series"] = len(ranges)
    if fallbacks:
        total.details["fallback"] = fallbacks
    if ctx.dry_run:
        total.details["plan"] = plans
        if files:
            total.details["archive_plan"] = files
    return total
