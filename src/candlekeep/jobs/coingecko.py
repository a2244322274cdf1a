"""The CoinGecko job types: ``coingecko_prices`` (price points or OHLC of coins into a
store, resumably) and ``coingecko_quality`` (how complete a window of them is).

CoinGecko decides the width of what it returns from the range asked: the prices job asks
so that the wanted timeframe comes back and stores under whatever did (see
``sources.coingecko.granularity``). The work lives in ``sources.coingecko`` and is imported
when a run starts: registering job types must not load pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from candlekeep.config.models import Duration, EpochMs
from candlekeep.core.errors import ConfigError, SourceError
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:
    from candlekeep.sources.coingecko.coins import Coin
    from candlekeep.sources.coingecko.source import CoinGeckoSource

ANY_TIMEFRAME = ("5m", "30m", "1h", "4h", "1d")
"""Every timeframe some plan can give (the config loader checks the source's plan)."""


class _CoinGeckoParams(Params):
    source: str
    """A source of type coingecko."""
    coins: tuple[str, ...] = Field(min_length=1)
    """CoinGecko coin ids (``bitcoin``) or symbols only one coin has (``btc``)."""
    timeframe: str = "1h"
    endpoint: Literal["market_chart", "ohlc"] | None = None
    """Default: market_chart for 5m/1h/1d (prices, market caps, 24 h volumes), ohlc for
    30m/4h."""
    store: str | None = None
    """Default: the config's default store."""

    @model_validator(mode="after")
    def _timeframe(self) -> _CoinGeckoParams:
        if self.timeframe not in ANY_TIMEFRAME:
            raise ValueError(f"CoinGecko gives no {self.timeframe} points; possible: 5m "
                             "(last 24 h only), 1h, 1d, and 30m/4h OHLC")
        return self

    @property
    def chosen_endpoint(self) -> Literal["market_chart", "ohlc"]:
        from candlekeep.sources.coingecko.granularity import default_endpoint

        return self.endpoint or default_endpoint(self.timeframe)


class CoinGeckoPricesParams(_CoinGeckoParams):
    lookback: Duration | None = None
    """The window ending now (``2d``); or give ``start`` (and ``end``)."""
    start: EpochMs | None = None
    end: EpochMs | None = None
    refetch: bool = False
    """Ask for the whole window again, ignoring the checkpoints (rows are upserted)."""

    @model_validator(mode="after")
    def _window(self) -> CoinGeckoPricesParams:
        if (self.lookback is None) == (self.start is None):
            raise ValueError("give either lookback (e.g. 2d) or start")
        if self.end is not None and self.start is None:
            raise ValueError("end needs start")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class CoinGeckoQualityParams(_CoinGeckoParams):
    window: Duration = 2 * 86_400.0
    """How far back from now to check (``2d``)."""
    max_missing: int = Field(default=0, ge=0)
    """Missing points per coin tolerated before the run fails."""


def _where(ctx: JobContext, key: str) -> tuple[str, str]:
    return ctx.config.file, f"jobs.{ctx.job_name}.params.{key}"


def _store_name(ctx: JobContext, p: _CoinGeckoParams) -> str:
    name = p.store or ctx.config.default_store
    if name is None or name not in ctx.config.stores:
        raise ConfigError(*_where(ctx, "store"), f"unknown store {name!r}" if name else
                          "no store configured", f"stores defined: "
                          f"{', '.join(ctx.config.stores) or 'none'}")
    return name


async def _source(ctx: JobContext, p: _CoinGeckoParams) -> CoinGeckoSource:
    from candlekeep.sources.coingecko.source import CoinGeckoSource

    source = await ctx.source(p.source)
    if not isinstance(source, CoinGeckoSource):
        raise ConfigError(*_where(ctx, "source"), f"source {p.source!r} is not a coingecko "
                          "source", "name a source of type coingecko")
    return source


def _sources(ctx: JobContext, p: _CoinGeckoParams) -> set[str]:
    return {p.source}


@job_type("coingecko_prices", CoinGeckoPricesParams,
          "CoinGecko prices, market caps and 24 h volumes (or OHLC) of coins, resumably.",
          sources=_sources)
async def coingecko_prices(ctx: JobContext, p: CoinGeckoPricesParams) -> JobResult:
    from candlekeep.sources.coingecko.granularity import TIMEFRAME_MS

    now = ctx.clock.now_ms()
    step = TIMEFRAME_MS[p.timeframe]
    # A lookback covers every slot it touches: "2d" of hours is 48 of them.
    start = p.start if p.start is not None else \
        (now - int((p.lookback or 0) * 1000)) // step * step
    end = min(p.end if p.end is not None else now, now)
    store_name = _store_name(ctx, p)
    endpoint = p.chosen_endpoint
    if ctx.dry_run:
        return JobResult(details={"plan": [
            f"{', '.join(p.coins)}: {p.timeframe} {endpoint} from {fmt_ms(start)} to "
            f"{fmt_ms(end)} (or from each coin's checkpoint) via source {p.source} into "
            f"store {store_name}"]})

    from candlekeep.sources.coingecko.pull import Puller, pull_all

    source = await _source(ctx, p)
    before = source.stats.requests
    await source.markets()  # the coin list: a refused key or an outage fails the run here
    coins: list[tuple[str, Coin | SourceError]] = []
    for wanted in p.coins:
        try:
            coins.append((wanted, await source.coin(wanted)))
        except SourceError as exc:
            coins.append((wanted, SourceError(f"{exc} (at {_where(ctx, 'coins')[1]})")))
    puller = Puller(source, await ctx.store(store_name), store_name, ctx.db, p.timeframe,
                    endpoint, p.refetch)
    outcomes = await pull_all(puller, coins, start, end, now)
    res = JobResult(requests=source.stats.requests - before,
                    details={"store": store_name, "timeframe": p.timeframe,
                             "endpoint": endpoint, "coins": {}})
    for o in outcomes:
        res.rows_written += o.rows
        res.warnings.extend(o.warnings)
        if o.error is not None:
            res.errors.append(f"coin {o.coin}: {o.error}")
        res.details["coins"][o.coin] = o.as_dict()
    ctx.log.info("coingecko_prices source=%s coins=%d timeframe=%s rows=%d requests=%d "
                 "errors=%d", p.source, len(p.coins), p.timeframe, res.rows_written,
                 res.requests, len(res.errors))
    return res


@job_type("coingecko_quality", CoinGeckoQualityParams,
          "How complete stored CoinGecko points are: per coin, points against the grid, "
          "holes, granularity seen, newest point's age, null and zero prices.")
async def coingecko_quality(ctx: JobContext, p: CoinGeckoQualityParams) -> JobResult:
    from candlekeep.sources.coingecko.datasets import COINGECKO_OHLC, COINGECKO_PRICES
    from candlekeep.sources.coingecko.granularity import TIMEFRAME_MS
    from candlekeep.sources.coingecko.quality import summarise

    if p.source not in ctx.config.sources:
        raise ConfigError(*_where(ctx, "source"), f"unknown source {p.source!r}",
                          f"defined sources: {', '.join(ctx.config.sources)}")
    store_name = _store_name(ctx, p)
    ohlc = p.chosen_endpoint == "ohlc"
    dataset, value = (COINGECKO_OHLC, "close") if ohlc else (COINGECKO_PRICES, "price")
    step = TIMEFRAME_MS[p.timeframe]
    now = ctx.clock.now_ms()
    hi = now // step * step
    lo = (now - int(p.window * 1000)) // step * step  # every slot the window touches
    store = await ctx.store(store_name)
    rows = await store.read(dataset, where={"source": p.source}, column="ts", lo=lo, hi=hi)
    res = JobResult(details={"store": store_name, "dataset": dataset.name,
                             "window": [fmt_ms(lo), fmt_ms(hi)], "coins": {}})
    for coin in p.coins:
        q = summarise(rows, coin, p.timeframe, step, lo, hi, now, value)
        res.details["coins"][coin] = q.as_dict()
        ctx.log.info("coingecko_quality %s", q.line())
        if q.problem is not None:
            res.errors.append(f"coin {coin}: {q.problem}")
        elif q.missing > p.max_missing:
            first = ", ".join(f"{fmt_ms(a)}..{fmt_ms(b)}" for a, b in q.holes[:3])
            res.errors.append(f"coin {coin}: {q.missing} of {q.expected} {p.timeframe} "
                              f"points missing in {dataset.name} (more than max_missing "
                              f"{p.max_missing}); first holes: {first}")
        if q.other_timeframes:
            res.warnings.append(f"coin {coin}: rows stored under {q.other_timeframes} "
                                f"instead of {p.timeframe} (what CoinGecko returned)")
        if q.null_values or q.zero_values:
            res.warnings.append(f"coin {coin}: {q.null_values} null and {q.zero_values} "
                                f"zero or negative {value} values")
    return res
