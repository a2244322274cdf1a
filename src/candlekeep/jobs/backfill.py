"""Backfill: history of the configured series from ``start`` (or listing) to now, resumable."""

from __future__ import annotations

from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.jobs.base import JobContext, JobResult, SeriesFilter
from candlekeep.jobs.bulk_fetch import close_archives, open_archives
from candlekeep.jobs.fallback import checkpoint_name as fallback_checkpoint
from candlekeep.jobs.gaps import scan_gaps
from candlekeep.jobs.registry import job_type, series_sources
from candlekeep.jobs.series_fetch import SyncRange, sync_all

CHECKPOINT = "backfill"


class BackfillParams(SeriesFilter):
    start: int | None = None
    end: int | None = None
    restart: bool = False
    concurrency: int = 4
    bulk: bool = True
    """Use the archive of sources with a ``bulk`` block (False: REST only)."""


@job_type("backfill", BackfillParams, "History from start (or listing) to now; resumable.",
          sources=series_sources)
async def backfill(ctx: JobContext, p: BackfillParams) -> JobResult:
    now = ctx.clock.now_ms()
    plans = p.plans(ctx.runtime)
    if p.restart and not ctx.dry_run:
        await ctx.db.clear_checkpoints(CHECKPOINT, [pl.key for pl in plans])
        served: dict[str, list[SeriesKey]] = {}  # what fallbacks served, per store
        for pl in plans:
            served.setdefault(pl.store, []).extend(
                SeriesKey(name, pl.key.symbol, pl.key.timeframe) for name in pl.fallback)
        for store, keys in served.items():
            if keys:
                await ctx.db.clear_checkpoints(fallback_checkpoint(CHECKPOINT, store), keys)
    ranges = []
    for plan in plans:
        tf = parse_timeframe(plan.key.timeframe)
        start = p.start if p.start is not None else (plan.start_ms or 0)
        end = min(x for x in (p.end, plan.end_ms, tf.floor(now)) if x is not None)
        checkpoint = None if p.restart else await ctx.db.get_checkpoint(CHECKPOINT, plan.key)
        if checkpoint is not None and checkpoint > start:
            ranges.append(SyncRange(plan, checkpoint, end, probe_listing=False))
        else:
            ranges.append(SyncRange(plan, start, end, probe_listing=True))
    archives = await open_archives(ctx, {r.plan.key.source for r in ranges}) if p.bulk else {}
    try:
        result = await sync_all(ctx, ranges, CHECKPOINT, p.concurrency, archives)
    finally:
        archive_stats = await close_archives(archives)
    if archives:
        result.details["archive"] = archive_stats
        bulk_plans = [r.plan for r in ranges if r.plan.key.source in archives]
        if bulk_plans and not ctx.dry_run:
            # Archive files hold what the exchange had, holes included: record those holes
            # now, as the gap scan would, rather than leave them for the next scheduled scan.
            result.details["gaps"] = await scan_gaps(ctx, bulk_plans)
    return result
