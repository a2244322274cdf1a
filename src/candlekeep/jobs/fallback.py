"""Fallback sources: when a series' own source cannot serve a range, fetch it elsewhere.

A range the primary fails (its circuit open, retries exhausted, a reply it keeps getting
wrong, a region block) is fetched from the healthiest fallback the series names and stored
under the fallback's own source name: the rows say where they came from, so a series never
mixes two exchanges' prices under one name. The primary's checkpoint does not move over
that range, so the primary fills its own series once it is back (the next ingest starts at
its newest stored candle; a backfill resumes at its checkpoint). Each fallback keeps its own
checkpoint per store, so while the primary stays down each run fetches from a fallback only
what that fallback has not served yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from candlekeep.core.errors import (
    BadReplyError,
    GeoBlockedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms, iso_ms
from candlekeep.jobs.base import JobContext, JobResult
from candlekeep.jobs.runtime import SeriesPlan
from candlekeep.sources.base import Source
from candlekeep.sources.circuit import CircuitOpenError
from candlekeep.sources.health import snapshot_score

CHUNK_PAGES = 8
"""Pages per durable write, as for the primary (``series_fetch.PAGES_PER_WRITE``)."""


def falls_back(exc: SourceError) -> bool:
    """Whether the primary's failure is one another source can stand in for: the provider
    is down, overloaded, blocked here or answering garbage. A plain SourceError (an unknown
    symbol, a refused parameter) is a mistake a fallback would only hide."""
    return isinstance(exc, CircuitOpenError | TransientSourceError | BadReplyError
                      | GeoBlockedError)


def checkpoint_name(checkpoint_job: str, store: str) -> str:
    """The fallback's own progress, per job kind and store (one fallback series can stand
    in for primaries of several stores)."""
    return f"{checkpoint_job}.fallback.{store}"


def order_fallbacks(sources: Sequence[Source]) -> list[Source]:
    """Those that could take a request now, healthiest first; ties keep the configured
    order. A source whose circuit is open is left out."""
    ranked = sorted(enumerate(sources),
                    key=lambda pair: (-snapshot_score(pair[1].circuit.snapshot()), pair[0]))
    return [s for _, s in ranked if s.circuit.available]


@dataclass(frozen=True, slots=True)
class FallbackFill:
    """One range a fallback served, for the job result and the log."""

    series: str
    fallback: str
    start: str
    end: str
    rows: int
    cause: str

    def as_dict(self) -> dict[str, object]:
        return {"series": self.series, "fallback": self.fallback, "start": self.start,
                "end": self.end, "rows": self.rows, "cause": self.cause}


async def fill_from_fallback(ctx: JobContext, plan: SeriesPlan, start_ms: int, end_ms: int,
                             cause: SourceError, checkpoint_job: str, res: JobResult,
                             probe_listing: bool) -> None:
    """Fetch ``[start_ms, end_ms)`` of ``plan``'s series from its healthy fallbacks, in
    order, each storing under its own name and taking over where the one before it
    stopped; SourceError when the range could not be completed."""
    key, tf = plan.key, parse_timeframe(plan.key.timeframe)
    candidates = order_fallbacks([await ctx.source(n) for n in plan.fallback])
    tried: list[str] = [f"{n}: circuit open" for n in plan.fallback
                        if n not in {s.name for s in candidates}]
    store = await ctx.store(plan.store)
    progress = checkpoint_name(checkpoint_job, plan.store)
    pos = start_ms  # everything before this is served, by the primary or a fallback

    def served(source: Source, lo: int, hi: int, rows: int) -> None:
        fill = FallbackFill(str(key), source.name, iso_ms(lo) or "", iso_ms(hi) or "", rows,
                            str(cause))
        res.details.setdefault("fallback", []).append(fill.as_dict())
        res.warnings.append(
            f"{key}: {key.source} failed ({cause}); {fmt_ms(lo)} → {fmt_ms(hi)} fetched "
            f"from fallback {source.name} ({rows} candles stored as "
            f"{SeriesKey(source.name, key.symbol, key.timeframe)}); {key.source} fills its "
            "own series once it is back")
        ctx.log.warning("series=%s served by fallback=%s rows=%d", key, source.name, rows)

    for source in candidates:
        fb_key = SeriesKey(source.name, key.symbol, key.timeframe)
        done = await ctx.db.get_checkpoint(progress, fb_key)
        first_lo = lo = max(pos, done) if done is not None else pos
        rows = 0
        try:
            if probe_listing and done is None and pos == start_ms:
                first = await source.first_candle_ms(key.symbol, key.timeframe, lo)
                lo = end_ms if first is None else max(lo, first)
            chunk_ms = source.page_limit(key.timeframe) * CHUNK_PAGES * tf.ms
            while lo < end_ms:
                if ctx.cancel.is_set():
                    res.warnings.append(f"{key}: fallback {source.name} cancelled at "
                                        f"{fmt_ms(lo)}")
                    return
                hi = min(lo + chunk_ms, end_ms)
                batch = await source.fetch_candles(key.symbol, key.timeframe, lo, hi)
                if batch.num_rows:
                    rows += await store.upsert_candles(batch)
                await ctx.db.set_checkpoint(progress, fb_key, hi, ctx.clock.now_ms())
                lo = hi
        except SourceError as exc:
            ctx.log.warning("series=%s fallback=%s failed error=%s", key, source.name, exc)
            tried.append(f"{source.name}: {exc}")
            res.rows_written += rows
            if lo > first_lo:  # it served part: the next one takes over from there
                served(source, first_lo, lo, rows)
                pos = lo
            continue
        res.rows_written += rows
        if first_lo >= end_ms:
            res.warnings.append(f"{key}: {key.source} failed ({cause}); fallback "
                                f"{source.name} already served {fmt_ms(pos)} → "
                                f"{fmt_ms(end_ms)}")
        else:
            served(source, first_lo, end_ms, rows)
        return
    raise SourceError(f"{cause}; no fallback could serve {fmt_ms(pos)} → "
                      f"{fmt_ms(end_ms)}: " + "; ".join(tried)) from cause


__all__ = ["FallbackFill", "checkpoint_name", "falls_back", "fill_from_fallback",
           "order_fallbacks"]
