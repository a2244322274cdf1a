"""The ``orderbook`` job: one order-book snapshot per symbol of a universe (or a list), its
spread and ±2 % depth stored in ``orderbook_snapshots`` with one upsert per run.

Symbols are fetched concurrently (at most ``concurrency`` at once; the source's limiter and
breaker pace them further). A symbol whose book cannot be had (no market, a failed request,
an empty, crossed or non-finite book) is listed in the result with its reason and logged;
the others are stored all the same. A run where every symbol failed is an error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from candlekeep.core.errors import BadReplyError, ConfigError, SourceError
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:
    from candlekeep.sources.base import Source


class OrderbookParams(Params):
    universe: str | None = None
    """A name under ``universes:`` (its source, symbols and store)."""
    source: str | None = None
    """With ``symbols``, instead of a universe."""
    symbols: list[str] | None = None
    store: str | None = None
    """Where snapshots go. Default: where a scan reads them, the universe's store
    (``universe_store``); for ``source`` + ``symbols``, the store of that source's first
    series, else the default store."""
    limit: int = Field(default=100, ge=1, le=5000)
    """Levels a side to ask for (Binance spot: 100 weighs 5, 500 weighs 25; USDⓈ-M takes
    5, 10, 20, 50, 100, 500 or 1000). Depth counts only the levels returned."""
    concurrency: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _one_way(self) -> OrderbookParams:
        if (self.universe is None) == (self.source is None or self.symbols is None):
            raise ValueError("give either universe: NAME or source: NAME with symbols: [...]")
        return self


async def _targets(ctx: JobContext, p: OrderbookParams) -> tuple[str, list[str], str]:
    """(source, symbols, store) the run covers; ConfigError for names nothing configures.
    A universe is resolved now (a top-by-volume one from stored daily candles)."""
    cfg = ctx.config
    key = f"jobs.{ctx.job_name}.params"
    store = p.store
    if p.universe is not None:
        from candlekeep.scans.universe import resolve_universe

        uni = await asyncio.to_thread(resolve_universe, ctx.runtime, cfg, p.universe,
                                      ctx.clock.now_ms())
        for symbol, why in uni.excluded.items():
            ctx.log.info("universe %s leaves out %s: %s", uni.name, symbol, why)
        source, symbols, store = uni.source, list(uni.symbols), store or uni.store
    else:
        from candlekeep.scans.universe import source_store

        assert p.source is not None and p.symbols is not None  # the validator's
        source, symbols = p.source, p.symbols
        store = store or source_store(cfg, source)
    if source not in cfg.sources:
        raise ConfigError(cfg.file, f"{key}.source", f"unknown source {source!r}",
                          f"configured: {', '.join(cfg.sources) or 'none'}")
    if store is None or store not in cfg.stores:
        raise ConfigError(cfg.file, f"{key}.store", f"unknown store {store!r}",
                          f"configured: {', '.join(cfg.stores) or 'none'}")
    return source, list(dict.fromkeys(symbols)), store


async def _snapshot(ctx: JobContext, source: Source, symbol: str, limit: int,
                    slots: asyncio.Semaphore) -> dict[str, Any]:
    from candlekeep.scans.orderbook import snapshot_row

    async with slots:
        bids, asks = await source.order_book(symbol, limit)
    now = ctx.clock.now_ms()
    try:
        return snapshot_row(source.name, symbol, now, bids, asks, ingested_ms=now)
    except BadReplyError as exc:
        source.stats.rejected_replies += 1
        ctx.log.warning("reply rejected source=%s symbol=%s reason=%r", source.name, symbol,
                        exc.reason)
        raise


@job_type("orderbook", OrderbookParams,
          "Order-book snapshots (spread, depth within 2 % of mid) of a universe's symbols.")
async def orderbook(ctx: JobContext, p: OrderbookParams) -> JobResult:
    source_name, symbols, store_name = await _targets(ctx, p)
    if ctx.dry_run:
        return JobResult(details={"plan": f"snapshot {len(symbols)} order book(s) of "
                                          f"{source_name} into {store_name}"})
    from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
    from candlekeep.scans.orderbook import snapshots_table

    source = await ctx.source(source_name)
    before = source.stats.requests
    slots = asyncio.Semaphore(p.concurrency)
    got = await asyncio.gather(*(_snapshot(ctx, source, s, p.limit, slots) for s in symbols),
                               return_exceptions=True)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for symbol, outcome in zip(symbols, got, strict=True):
        if isinstance(outcome, SourceError):
            failed.append({"symbol": symbol, "reason": str(outcome)})
            ctx.log.warning("order book failed source=%s symbol=%s reason=%s", source_name,
                            symbol, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            rows.append(outcome)
    res = JobResult(requests=source.stats.requests - before)
    if rows:
        store = await ctx.store(store_name)
        res.rows_written = await store.upsert(ORDERBOOK_SNAPSHOTS, snapshots_table(rows))
    res.details.update(source=source_name, store=store_name, snapshots=len(rows),
                       failed=failed)
    lines = [f"order book {f['symbol']}: {f['reason']}" for f in failed]
    if failed and not rows:
        res.errors += lines
    else:
        res.warnings += lines
    return res
