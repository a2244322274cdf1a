"""Gap scan (find missing ranges in the store, record them) and gap repair (refetch them)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.errors import SourceError
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type
from candlekeep.jobs.runtime import SeriesPlan
from candlekeep.state.db import GapRow

CONFIRM_AFTER_EMPTY = 2
"""A gap is ``confirmed_empty`` once the exchange returned nothing for it this many times."""

FAIL_AFTER_ERRORS = 5
"""Repair attempts that ended in an error before a gap is marked ``failed``."""


class GapFilter(Params):
    source: str | None = None
    symbol: str | None = None
    timeframe: str | None = None


def _by_store(plans: list[SeriesPlan]) -> dict[str, list[SeriesKey]]:
    out: dict[str, list[SeriesKey]] = defaultdict(list)
    for p in plans:
        out[p.store].append(p.key)
    return out


def scan_store(ctx: JobContext, store_name: str, keys: list[SeriesKey], all_configured: bool
               ) -> tuple[pa.Table, dict[str, int]]:
    """Find gaps of ``keys`` in one store (in SQL) and reconcile the state DB with them."""
    store = ctx.runtime.store(store_name)
    if all_configured or len(keys) > 20:
        found = store.find_gaps()
        mask = pc.is_in(
            pc.binary_join_element_wise(found["source"], found["symbol"], found["timeframe"],
                                        "\x1f"),
            value_set=pa.array(["\x1f".join(k) for k in keys], pa.string()),
        ) if found.num_rows else None
        if mask is not None:
            found = found.filter(mask)
    else:
        found = pa.concat_tables([store.find_gaps(series=k) for k in keys])
    if ctx.dry_run:
        return found, {"new": 0, "known": 0, "closed": 0, "resized": 0}
    return found, ctx.state.record_gap_scan(keys, found, ctx.clock.now_ms())


@job_type("gaps_scan", GapFilter, "Find missing candle ranges in the stores; record them.")
async def gaps_scan(ctx: JobContext, p: GapFilter) -> JobResult:
    res = JobResult()
    plans = ctx.runtime.plans(p.source, p.symbol, p.timeframe)
    everything = p.source is None and p.symbol is None and p.timeframe is None
    totals: dict[str, int] = defaultdict(int)
    found_gaps = missing = 0
    for store_name, keys in _by_store(plans).items():
        found, counts = await asyncio.to_thread(scan_store, ctx, store_name, keys, everything)
        found_gaps += found.num_rows
        for k, v in counts.items():
            totals[k] += v
        for row in found.to_pylist():
            tf = parse_timeframe(row["timeframe"])
            missing += (int(row["gap_end"].timestamp() * 1000)
                        - int(row["gap_start"].timestamp() * 1000)) // tf.ms + 1
    res.details.update(gaps=found_gaps, missing_candles=missing, **totals)
    ctx.log.info("gaps scan series=%d gaps=%d missing=%d new=%d closed=%d", len(plans),
                 found_gaps, missing, totals["new"], totals["closed"])
    return res


class RepairParams(GapFilter):
    max_gaps: int | None = None
    include_failed: bool = False


@dataclass
class _Window:
    """Neighbouring gaps of one series merged into one fetch."""

    key: SeriesKey
    start: int
    end: int  # inclusive open time of the last missing candle
    gaps: list[GapRow]


def merge_windows(gaps: list[GapRow], page_limit: int) -> list[_Window]:
    """Merge each series' gaps into the fewest fetch windows of at most ``page_limit`` candles,
    so one request repairs several nearby holes."""
    windows: list[_Window] = []
    by_series: dict[SeriesKey, list[GapRow]] = defaultdict(list)
    for g in gaps:
        by_series[g.series].append(g)
    for key, items in by_series.items():
        tf = parse_timeframe(key.timeframe)
        items.sort(key=lambda g: g.gap_start)
        cur: _Window | None = None
        for g in items:
            if cur is not None and (g.gap_end - cur.start) // tf.ms + 1 <= page_limit:
                cur.end = max(cur.end, g.gap_end)
                cur.gaps.append(g)
                continue
            cur = _Window(key, g.gap_start, g.gap_end, [g])
            windows.append(cur)
    return windows


@job_type("gaps_repair", RepairParams, "Refetch recorded gaps; confirm exchange-side holes.")
async def gaps_repair(ctx: JobContext, p: RepairParams) -> JobResult:
    res = JobResult()
    plans = {pl.key: pl for pl in ctx.runtime.plans(p.source, p.symbol, p.timeframe)}
    statuses = ["open", "failed"] if p.include_failed else ["open"]
    gaps = [g for g in ctx.state.list_gaps(status=statuses) if g.series in plans]
    gaps = gaps[: p.max_gaps] if p.max_gaps is not None else gaps
    counts: dict[str, int] = defaultdict(int)
    by_source: dict[str, list[GapRow]] = defaultdict(list)
    for g in gaps:
        by_source[g.series.source].append(g)
    windows: list[_Window] = []
    for source_name, items in by_source.items():
        source = ctx.runtime.source(source_name)
        tf_limits = {g.series.timeframe: source.page_limit(g.series.timeframe) for g in items}
        windows += merge_windows(items, min(tf_limits.values()))
    res.details["windows"] = len(windows)
    res.details["gaps"] = len(gaps)
    if ctx.dry_run:
        res.details["plan"] = [f"{w.key}: {fmt_ms(w.start)} → {fmt_ms(w.end)} "
                               f"({len(w.gaps)} gaps)" for w in windows]
        return res
    touched: set[SeriesKey] = set()
    ctx.progress.start("repair", len(windows), "repairing gaps")
    sem = asyncio.Semaphore(8)

    async def one(w: _Window) -> None:
        async with sem:
            await _repair_window(ctx, plans[w.key], w, res, counts)
            touched.add(w.key)
            ctx.progress.advance("repair", 1)

    await asyncio.gather(*(one(w) for w in windows))
    ctx.progress.finish("repair")
    # A partly filled gap splits; a targeted rescan records what is still missing.
    for store_name, keys in _by_store([plans[k] for k in touched]).items():
        await asyncio.to_thread(scan_store, ctx, store_name, keys, False)
    res.details.update(counts)
    return res


async def _repair_window(ctx: JobContext, plan: SeriesPlan, w: _Window, res: JobResult,
                         counts: dict[str, int]) -> None:
    tf = parse_timeframe(w.key.timeframe)
    source = ctx.runtime.source(w.key.source)
    store = ctx.runtime.store(plan.store)
    now = ctx.clock.now_ms()
    try:
        batch = await source.fetch_candles(w.key.symbol, w.key.timeframe, w.start, w.end + tf.ms)
    except SourceError as exc:
        ctx.log.warning("repair series=%s window=%s error=%s", w.key, fmt_ms(w.start), exc)
        for g in w.gaps:
            status = "failed" if g.attempts + 1 >= FAIL_AFTER_ERRORS else g.status
            ctx.state.update_gap(g.id, attempts=g.attempts + 1, last_error=str(exc)[:500],
                                 status=status)
            counts["errors"] += 1
        res.warnings.append(f"{w.key}: repair failed: {exc}")
        return
    if batch.num_rows:
        res.rows_written += await asyncio.to_thread(store.upsert_candles, batch)
    ts = pc.cast(batch["ts"], pa.int64()).to_numpy() if batch.num_rows else None
    for g in w.gaps:
        got = 0 if ts is None else int(((ts >= g.gap_start) & (ts <= g.gap_end)).sum())
        if got == g.candles(tf.ms):
            ctx.state.update_gap(g.id, status="repaired", repaired_at=now,
                                 attempts=g.attempts + 1, last_error=None)
            counts["repaired"] += 1
        elif got == 0:
            empty = g.empty_attempts + 1
            status = "confirmed_empty" if empty >= CONFIRM_AFTER_EMPTY else "open"
            ctx.state.update_gap(g.id, attempts=g.attempts + 1, empty_attempts=empty,
                                 status=status, last_error=None)
            counts["confirmed_empty" if status == "confirmed_empty" else "still_empty"] += 1
        else:
            ctx.state.update_gap(g.id, attempts=g.attempts + 1, last_error=None)
            counts["partial"] += 1
