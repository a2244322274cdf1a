"""Ingest: every configured series from its last stored candle to the last closed one."""

from __future__ import annotations

from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.jobs.base import JobContext, JobResult, SeriesFilter
from candlekeep.jobs.registry import job_type, series_sources
from candlekeep.jobs.series_fetch import SyncRange, sync_all

CHECKPOINT = "ingest"


class IngestParams(SeriesFilter):
    concurrency: int = 8


@job_type("ingest", IngestParams, "Latest closed candles for every configured series.",
          sources=series_sources)
async def ingest(ctx: JobContext, p: IngestParams) -> JobResult:
    now = ctx.clock.now_ms()
    plans = p.plans(ctx.runtime)
    # One GROUP BY per store, not one query (and connection) per series.
    latest_by_key: dict[tuple[str, SeriesKey], int] = {}
    for store_name in {pl.store for pl in plans}:
        spans = await (await ctx.store(store_name)).spans(p.source)
        latest_by_key.update({(store_name, s.series): s.last_ms for s in spans})
    ranges = []
    for plan in plans:
        tf = parse_timeframe(plan.key.timeframe)
        latest = latest_by_key.get((plan.store, plan.key))
        end = tf.floor(now) if plan.end_ms is None else min(plan.end_ms, tf.floor(now))
        if latest is not None:
            ranges.append(SyncRange(plan, latest + tf.ms, end, probe_listing=False))
        else:
            ranges.append(SyncRange(plan, plan.start_ms or 0, end, probe_listing=True))
    return await sync_all(ctx, ranges, CHECKPOINT, p.concurrency)
