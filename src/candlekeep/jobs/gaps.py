"""Gap scan (find missing ranges in the store, record them) and gap repair (refetch them).

pyarrow and numpy are imported inside the functions that use them: registering the job
types happens on every ``candlekeep list``, which must start in a blink.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlekeep.core.errors import SourceError
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult, SeriesFilter
from candlekeep.jobs.registry import job_type, series_sources
from candlekeep.jobs.runtime import SeriesPlan
from candlekeep.sources.circuit import CircuitOpenError
from candlekeep.state.rows import GapRow

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

CONFIRM_AFTER_EMPTY = 2
"""A gap is ``confirmed_empty`` once the exchange returned nothing for it this many times."""

FAIL_AFTER_ERRORS = 5
"""Repair attempts that ended in an error before a gap is marked ``failed``."""

WINDOWS_PER_WRITE = 64
"""Repair windows fetched concurrently between two writes: bounds memory and lost work."""


def _by_store(plans: list[SeriesPlan]) -> dict[str, list[SeriesKey]]:
    out: dict[str, list[SeriesKey]] = defaultdict(list)
    for p in plans:
        out[p.store].append(p.key)
    return out


def scan_store(ctx: JobContext, store_name: str, keys: list[SeriesKey], all_configured: bool
               ) -> tuple[pa.Table, dict[str, int]]:
    """Find gaps of ``keys`` in one store (in SQL) and reconcile the state DB with them."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
    # This whole function runs in a worker thread (see its callers).
    return found, ctx.runtime.state.record_gap_scan(keys, found, ctx.clock.now_ms())


@job_type("gaps_scan", SeriesFilter, "Find missing candle ranges in the stores; record them.")
async def gaps_scan(ctx: JobContext, p: SeriesFilter) -> JobResult:
    res = JobResult()
    plans = p.plans(ctx.runtime)
    res.details.update(await scan_gaps(ctx, plans, p.selects_all))
    return res


async def scan_gaps(ctx: JobContext, plans: list[SeriesPlan], all_configured: bool = False
                    ) -> dict[str, int]:
    """Scan the series of ``plans`` for gaps and record them; the counts found."""
    totals: dict[str, int] = defaultdict(int)
    found_gaps = missing = 0
    for store_name, keys in _by_store(plans).items():
        found, counts = await asyncio.to_thread(scan_store, ctx, store_name, keys,
                                               all_configured)
        found_gaps += found.num_rows
        for k, v in counts.items():
            totals[k] += v
        for row in found.to_pylist():
            tf = parse_timeframe(row["timeframe"])
            missing += (int(row["gap_end"].timestamp() * 1000)
                        - int(row["gap_start"].timestamp() * 1000)) // tf.ms + 1
    ctx.log.info("gaps scan series=%d gaps=%d missing=%d new=%d closed=%d", len(plans),
                 found_gaps, missing, totals["new"], totals["closed"])
    return {"gaps": found_gaps, "missing_candles": missing, **totals}


class RepairParams(SeriesFilter):
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


@job_type("gaps_repair", RepairParams, "Refetch recorded gaps; confirm exchange-side holes.",
          sources=series_sources)
async def gaps_repair(ctx: JobContext, p: RepairParams) -> JobResult:
    res = JobResult()
    plans = {pl.key: pl for pl in p.plans(ctx.runtime)}
    statuses = ["open", "failed"] if p.include_failed else ["open"]
    gaps = [g for g in await ctx.db.list_gaps(status=statuses) if g.series in plans]
    gaps = gaps[: p.max_gaps] if p.max_gaps is not None else gaps
    counts: dict[str, int] = defaultdict(int)
    by_source: dict[str, list[GapRow]] = defaultdict(list)
    for g in gaps:
        by_source[g.series.source].append(g)
    windows: list[_Window] = []
    for source_name, items in by_source.items():
        source = await ctx.source(source_name)
        tf_limits = {g.series.timeframe: source.page_limit(g.series.timeframe) for g in items}
        windows += merge_windows(items, min(tf_limits.values()))
    res.details["windows"] = len(windows)
    res.details["gaps"] = len(gaps)
    if ctx.dry_run:
        res.details["plan"] = [f"{w.key}: {fmt_ms(w.start)} → {fmt_ms(w.end)} "
                               f"({len(w.gaps)} gaps)" for w in windows]
        return res
    ctx.progress.start("repair", len(windows), "repairing gaps")
    for i in range(0, len(windows), WINDOWS_PER_WRITE):
        await _repair_chunk(ctx, plans, windows[i:i + WINDOWS_PER_WRITE], res, counts)
    ctx.progress.finish("repair")
    # A partly filled gap splits; a targeted rescan records what is still missing.
    touched = {w.key for w in windows}
    for store_name, keys in _by_store([plans[k] for k in touched]).items():
        await asyncio.to_thread(scan_store, ctx, store_name, keys, False)
    res.details.update(counts)
    return res


async def _repair_chunk(ctx: JobContext, plans: dict[SeriesKey, SeriesPlan],
                        windows: list[_Window], res: JobResult, counts: dict[str, int]) -> None:
    """Fetch a chunk of windows concurrently, write them with one upsert per store, then
    record every gap's verdict in one state transaction (store first: a crash in between
    leaves gaps open, and the next scan sees them filled)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    fetched: list[tuple[_Window, pa.Table | None, str | None]] = []
    horizons: dict[SeriesKey, int] = {}
    deferred: set[int] = set()

    async def fetch(w: _Window) -> None:
        tf = parse_timeframe(w.key.timeframe)
        source = await ctx.source(w.key.source)
        horizon = source.horizon_ms(w.key.timeframe)
        if horizon is not None:
            horizons[w.key] = horizon
        try:
            batch = await source.fetch_candles(w.key.symbol, w.key.timeframe, w.start,
                                               w.end + tf.ms)
        except CircuitOpenError as exc:
            # The provider is down: not an attempt at these gaps, so they are left as they
            # are (a few runs during an outage must not mark them failed).
            res.warnings.append(f"{w.key}: repair deferred: {exc}")
            deferred.add(id(w))
        except SourceError as exc:
            ctx.log.warning("repair series=%s window=%s error=%s", w.key, fmt_ms(w.start), exc)
            res.warnings.append(f"{w.key}: repair failed: {exc}")
            fetched.append((w, None, str(exc)[:500]))
        else:
            fetched.append((w, _inside_gaps(batch, w.gaps), None))
        ctx.progress.advance("repair", 1)

    await asyncio.gather(*(fetch(w) for w in windows))
    by_store: dict[str, list[pa.Table]] = defaultdict(list)
    for w, batch, _ in fetched:
        if batch is not None and batch.num_rows:
            by_store[plans[w.key].store].append(batch)
    for store_name, batches in by_store.items():
        store = await ctx.store(store_name)
        res.rows_written += await store.upsert_candles(pa.concat_tables(batches))
    now = ctx.clock.now_ms()
    updates: list[tuple[int, dict[str, object]]] = []
    if deferred:
        counts["deferred"] += sum(len(w.gaps) for w in windows if id(w) in deferred)
    for w, batch, error in fetched:
        tf_ms = parse_timeframe(w.key.timeframe).ms
        ts = pc.cast(batch["ts"], pa.int64()).to_numpy() if batch is not None else None
        horizon = horizons.get(w.key)
        for g in w.gaps:
            if horizon is not None and g.gap_start < horizon:
                # The exchange no longer serves these candles: an empty answer says nothing
                # about whether they existed, so the gap is never confirmed empty.
                beyond = (f"before the exchange's history horizon ({fmt_ms(horizon)}): "
                          "cannot be fetched")
                verdict = _verdict(g, None, beyond, tf_ms, now)
                verdict["_outcome"] = "beyond_horizon"
            else:
                verdict = _verdict(g, ts, error, tf_ms, now)
            counts[str(verdict.pop("_outcome"))] += 1
            updates.append((g.id, verdict))
    await ctx.db.update_gaps(updates)


def _inside_gaps(batch: pa.Table, gaps: list[GapRow]) -> pa.Table:
    """Only the candles a window's gaps were missing: the rest of the window is stored."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not batch.num_rows:
        return batch
    ts = pc.cast(batch["ts"], pa.int64()).to_numpy()
    starts = np.array([g.gap_start for g in gaps], dtype=np.int64)
    ends = np.array([g.gap_end for g in gaps], dtype=np.int64)
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    i = np.searchsorted(starts, ts, side="right") - 1  # the last gap starting at or before ts
    inside = (i >= 0) & (ts <= ends[np.clip(i, 0, None)])
    return batch if inside.all() else batch.filter(pa.array(inside))


def _verdict(g: GapRow, ts: np.ndarray | None, error: str | None, tf_ms: int,
             now: int) -> dict[str, object]:
    """New column values for gap ``g`` after one repair attempt (``_outcome`` for counts)."""
    attempts = g.attempts + 1
    if error is not None or ts is None:
        failed = attempts >= FAIL_AFTER_ERRORS
        return {"_outcome": "errors", "attempts": attempts, "last_error": error,
                "status": "failed" if failed else g.status}
    got = int(((ts >= g.gap_start) & (ts <= g.gap_end)).sum())
    if got == g.candles(tf_ms):
        return {"_outcome": "repaired", "status": "repaired", "repaired_at": now,
                "attempts": attempts, "last_error": None}
    if got == 0:
        empty = g.empty_attempts + 1
        confirmed = empty >= CONFIRM_AFTER_EMPTY
        return {"_outcome": "confirmed_empty" if confirmed else "still_empty",
                "status": "confirmed_empty" if confirmed else "open",
                "attempts": attempts, "empty_attempts": empty, "last_error": None}
    return {"_outcome": "partial", "attempts": attempts, "last_error": None}
