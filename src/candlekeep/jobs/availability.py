"""Availability: which daily files of Binance's public-data archive exist, per symbol and
date, re-probed over a lookback window, stored, and validated (availability/ does the work).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from candlekeep.config.models import SloConfig
from candlekeep.core.errors import ConfigError, GeoBlockedError, SourceError
from candlekeep.core.text import redact_url
from candlekeep.core.timeframes import TIMEFRAMES
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:  # the tracker is imported when a run starts: CLI start-up stays light
    from candlekeep.availability.update import ExchangeSymbols

DEFAULT_LOOKBACK_DAYS = 20


class AvailabilityParams(Params):
    source: str | None = None
    """A configured ccxt Binance source of ``market``; default: the only such source."""
    market: Literal["spot", "futures/um", "futures/cm"] = "futures/um"
    data_type: str = "klines/1m"
    store: str | None = None
    """Default: the config's default store."""
    date: dt.date | None = None
    """The newest date probed (default: yesterday, UTC)."""
    since: dt.date | None = None
    """Probe from this date instead of ``lookback`` days back (a first fill of history)."""
    lookback: int = Field(default=DEFAULT_LOOKBACK_DAYS, ge=1, le=10_000)
    """Days probed, ending at ``date``: files arrive late, so every run re-probes these."""
    concurrency: int = Field(default=32, ge=1, le=512)
    """HEAD requests in flight."""
    timeout: float = Field(default=30.0, gt=0)
    retries: int = Field(default=4, ge=1, le=20)
    """Tries per request before a 5xx or timeout is recorded as an error."""
    listing_url: str | None = None
    """The archive bucket's S3 listing (default: the public bucket); ``""``: none, the
    exchange's symbol list only."""
    volumes: bool = False
    """Also store each available day's volume, quote volume and trades from its 1d file."""
    min_symbols: int = Field(default=1, ge=0)
    """Completeness: files each settled date must have at least."""
    publication_buffer_days: int = Field(default=3, ge=0)
    cross_check_min: float = Field(default=0.95, ge=0, lt=1)
    """Share of the exchange's live symbols that must have a file on the newest settled date."""

    @field_validator("data_type")
    @classmethod
    def _kline_type(cls, v: str) -> str:
        kind, _, interval = v.partition("/")
        if kind != "klines" or interval not in TIMEFRAMES:
            raise ValueError(f"unsupported data_type {v!r}: use klines/<interval> with an "
                             f"interval of {', '.join(TIMEFRAMES)} (klines/1m, klines/1d …)")
        return v

    @field_validator("listing_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"listing_url must be an http(s) URL, not {v!r}")
        return v


def _sources(ctx: JobContext, p: AvailabilityParams) -> set[str]:
    try:
        return {_source_name(ctx, p)}
    except ConfigError:
        return set()


def _where(ctx: JobContext, key: str) -> tuple[str, str]:
    file = ctx.config.file
    return file, f"jobs.{ctx.job_name}.params.{key}"


def _source_name(ctx: JobContext, p: AvailabilityParams) -> str:
    """``p.source``, checked to be a ccxt Binance source of ``p.market``; or the only one."""
    from candlekeep.config.source_types import CcxtSourceConfig
    from candlekeep.sources.binance_archive.paths import archive_market

    def market_of(name: str) -> str | None:
        cfg = ctx.config.sources.get(name)
        if not isinstance(cfg, CcxtSourceConfig):
            return None
        found = archive_market(cfg.exchange, cfg.market_type)
        return found.value if found else None

    if p.source is not None:
        cfg = ctx.config.sources.get(p.source)
        if cfg is None:
            raise ConfigError(*_where(ctx, "source"), f"unknown source {p.source!r}",
                              f"defined: {', '.join(ctx.config.sources) or 'none'}")
        held = market_of(p.source)
        if held is None:
            raise ConfigError(*_where(ctx, "source"),
                              f"source {p.source!r} is not a ccxt Binance source (the "
                              "archive serves binance spot, binanceusdm and binancecoinm)",
                              "name a type: ccxt source of exchange binance, binanceusdm or "
                              "binancecoinm")
        if held != p.market:
            raise ConfigError(*_where(ctx, "market"),
                              f"market {p.market} does not match source {p.source!r}, whose "
                              f"archive market is {held}",
                              f"set market: {held}, or name a {p.market} source")
        return p.source
    matching = [n for n in ctx.config.sources if market_of(n) == p.market]
    if len(matching) != 1:
        problem = ("no ccxt Binance source" if not matching
                   else f"several sources ({', '.join(matching)})")
        raise ConfigError(*_where(ctx, "source"), f"{problem} for market {p.market}",
                          "set params.source to the Binance source to take symbols from")
    return matching[0]


def window(p: AvailabilityParams, today: dt.date) -> tuple[dt.date, ...]:
    """The dates a run probes: ``lookback`` days (or from ``since``) up to ``date``."""
    end = p.date or today - dt.timedelta(days=1)
    if end >= today:
        raise ConfigError("<params>", "date", f"{end} has no daily file yet (today, UTC, "
                          f"is {today}; a day's file appears after it ends)",
                          "probe yesterday or earlier")
    start = p.since if p.since is not None else end - dt.timedelta(days=p.lookback - 1)
    if start > end:
        raise ConfigError("<params>", "since", f"{start} is after the newest date {end}",
                          "give a since before date")
    return tuple(start + dt.timedelta(days=i) for i in range((end - start).days + 1))


@job_type("availability", AvailabilityParams,
          "Which daily files Binance's public-data archive has, per symbol and date.",
          sources=_sources, slo=SloConfig(target=0.95, window=30 * 86_400.0))
async def availability(ctx: JobContext, p: AvailabilityParams) -> JobResult:
    from candlekeep.availability.listing import PUBLIC_LISTING_URL
    from candlekeep.availability.update import UpdatePlan, run_update
    from candlekeep.config.source_types import CcxtSourceConfig
    from candlekeep.sources.binance_archive.paths import DEFAULT_BASE_URL, Market
    from candlekeep.sources.metering import current_meter
    from candlekeep.sources.retry import RetryPolicy

    source_name = _source_name(ctx, p)
    cfg = ctx.config.sources[source_name]
    assert isinstance(cfg, CcxtSourceConfig)  # checked by _source_name
    store_name = p.store or ctx.config.default_store
    if store_name is None:
        raise ConfigError(*_where(ctx, "store"), "no store configured",
                          "add a store to the config")
    files_from = cfg.bulk.base_url if cfg.bulk is not None else DEFAULT_BASE_URL
    if files_from.rstrip("/") != DEFAULT_BASE_URL and p.listing_url is None:
        # The public bucket's listing would reach the internet from an install that uses a
        # mirror (or the sim) precisely because it must not, and fail for the wrong reason.
        raise ConfigError(*_where(ctx, "listing_url"),
                          f"source {source_name} reads files from a mirror "
                          f"({redact_url(files_from)}), but the archive listing would "
                          "come from the public bucket",
                          "set listing_url to the mirror's S3 listing, or '' to take the "
                          "symbols from the exchange only")
    today = ctx.clock.now().date()
    try:
        dates = window(p, today)
    except ConfigError as exc:
        raise ConfigError(*_where(ctx, exc.key), exc.problem, exc.fix) from None
    plan = UpdatePlan(
        market=Market(p.market), data_type=p.data_type,
        base_url=cfg.bulk.base_url if cfg.bulk is not None else DEFAULT_BASE_URL,
        listing_url=PUBLIC_LISTING_URL if p.listing_url is None else (p.listing_url or None),
        dates=dates, concurrency=p.concurrency, timeout_s=p.timeout, volumes=p.volumes,
        min_symbols=p.min_symbols, publication_buffer_days=p.publication_buffer_days,
        cross_check_min=p.cross_check_min,
        retry=RetryPolicy(max_attempts=p.retries, base_delay_s=0.5, max_delay_s=10.0))
    if ctx.dry_run:
        return JobResult(details={"plan": (
            f"HEAD {p.data_type} daily files of {p.market} for {dates[0]} .. {dates[-1]} "
            f"({len(dates)} dates) from {redact_url(plan.base_url)}, symbols from source "
            f"{source_name}"
            + (f" and {redact_url(plan.listing_url)}" if plan.listing_url else "")
            + f", into store {store_name}")})
    exchange = await _exchange_symbols(ctx, source_name)
    store = await ctx.store(store_name)
    try:
        report = await run_update(
            plan, store, exchange, clock=ctx.clock,
            on_total=lambda n: ctx.progress.start("availability", n,
                                                  f"probing {p.market} {p.data_type}"),
            progress=lambda n: ctx.progress.advance("availability", n))
    finally:
        ctx.progress.finish("availability")
    meter = current_meter()
    if meter is not None:
        meter.requests += report.requests  # archive requests; the source counts its own
    details = report.details(plan)
    details.update(source=source_name, store=store_name)
    ctx.log.info("availability market=%s dates=%s..%s symbols=%d probes=%d available=%d "
                 "missing=%d error=%d", p.market, dates[0], dates[-1], report.symbols,
                 report.probes, details["available"], details["missing"], details["error"])
    return JobResult(rows_written=report.rows_written, warnings=report.warnings,
                     errors=report.errors, details=details)


async def _exchange_symbols(ctx: JobContext, name: str) -> ExchangeSymbols:
    from candlekeep.availability.update import ExchangeMarket, ExchangeSymbols

    try:
        source = await ctx.source(name)
        markets = await source.markets()
    except GeoBlockedError as exc:
        return ExchangeSymbols(problem=str(exc), geo_blocked=True)
    except SourceError as exc:
        return ExchangeSymbols(problem=str(exc))
    return ExchangeSymbols(tuple(
        ExchangeMarket(m.market_id, m.active, m.listing_ms, m.contract_size)
        for m in markets.values() if m.market_id))
