"""The ``hyperliquid_accounts`` job type: snapshots and incremental history of the wallets
listed under ``accounts:`` (and, with ``markets: true``, market contexts and funding rates).

The pulls live in ``candlekeep.accounts`` and are imported when a run starts: registering
job types happens on every ``candlekeep list``, which must not load pyarrow.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import Field

from candlekeep.accounts.kinds import INCREMENTAL, MarketPull, Pull
from candlekeep.config.models import EpochMs
from candlekeep.core.errors import ConfigError
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:
    from candlekeep.accounts.pulls import Outcome, Puller
    from candlekeep.config.models import AccountConfig


class HyperliquidAccountsParams(Params):
    accounts: tuple[str, ...] | None = Field(default=None, min_length=1)
    """Configured account names; default: every account."""
    datasets: tuple[Pull, ...] | None = Field(default=None, min_length=1)
    """Which pulls (snapshots, open_orders, orders, fills, funding, ledger); default all."""
    store: str | None = None
    """Where rows go (a buffer store is fine); default: the config's default store."""
    markets: bool = False
    """Also store every perpetual's context (mark, funding, open interest) and funding
    rates, once per source."""
    coins: tuple[str, ...] | None = Field(default=None, min_length=1)
    """With ``markets``: funding rates of these coins only (default: every perpetual)."""
    since: EpochMs | None = None
    """Where a dataset without a cursor starts (default: fills from the exchange's horizon,
    its 10,000 most recent; funding, ledger and funding rates 30 days back)."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Accounts pulled at once (their requests share the source's weight budget)."""


def _where(ctx: JobContext, key: str) -> tuple[str, str]:
    file = ctx.config.file
    return file, f"jobs.{ctx.job_name}.params.{key}"


def selected_accounts(ctx: JobContext, p: HyperliquidAccountsParams) -> list[AccountConfig]:
    """The accounts a run covers, in config order; ConfigError for an unknown name."""
    configured = ctx.config.accounts
    if not configured:
        raise ConfigError(ctx.config.file, "accounts",
                          "no accounts are configured",
                          "list wallets under accounts: [{name, address, source}]")
    if p.accounts is None:
        return list(configured)
    names = {a.name for a in configured}
    unknown = [n for n in p.accounts if n not in names]
    if unknown:
        raise ConfigError(*_where(ctx, "accounts"), f"unknown account {unknown[0]!r}",
                          f"configured accounts: {', '.join(sorted(names))}")
    return [a for a in configured if a.name in p.accounts]


def _sources(ctx: JobContext, p: HyperliquidAccountsParams) -> set[str]:
    try:
        return {a.source for a in selected_accounts(ctx, p)}
    except ConfigError:
        return set()


def _store_name(ctx: JobContext, p: HyperliquidAccountsParams) -> str:
    name = p.store or ctx.config.default_store
    if name is None:
        raise ConfigError(*_where(ctx, "store"), "no store configured",
                          "add a store to the config")
    if name not in ctx.config.stores:
        raise ConfigError(*_where(ctx, "store"), f"unknown store {name!r}",
                          f"stores defined: {', '.join(ctx.config.stores)}")
    return name


@job_type("hyperliquid_accounts", HyperliquidAccountsParams,
          "Snapshots, orders, fills, funding and ledger of Hyperliquid accounts, "
          "incrementally.", sources=_sources)
async def hyperliquid_accounts(ctx: JobContext, p: HyperliquidAccountsParams) -> JobResult:
    accounts = selected_accounts(ctx, p)
    store_name = _store_name(ctx, p)
    pulls = [pull for pull in Pull if p.datasets is None or pull in p.datasets]
    if ctx.dry_run:
        return JobResult(details={"plan": await _plan(ctx, p, accounts, pulls, store_name)})

    from candlekeep.accounts.pulls import Puller
    from candlekeep.accounts.wire import Who
    from candlekeep.sources.hyperliquid.source import HyperliquidSource

    store = await ctx.store(store_name)
    pullers: dict[str, Puller] = {}
    for name in dict.fromkeys(a.source for a in accounts):
        source = await ctx.source(name)
        if not isinstance(source, HyperliquidSource):
            raise ConfigError(*_where(ctx, "accounts"), f"source {name!r} is not a "
                              "hyperliquid source", "name a source of type hyperliquid")
        pullers[name] = Puller(source, store, store_name, ctx.db, ctx.clock.now_ms, p.since,
                               ctx.cancel)

    gate = asyncio.Semaphore(p.concurrency)
    ctx.progress.start("hyperliquid_accounts", len(accounts), "pulling accounts")

    async def one(acct: AccountConfig) -> list[Outcome]:
        async with gate:
            if ctx.cancel.is_set():
                return []
            try:
                return await pullers[acct.source].account(
                    Who(acct.source, acct.name, acct.address), pulls)
            finally:
                ctx.progress.advance("hyperliquid_accounts", 1)

    from candlekeep.core.tasks import gather_all

    try:
        per_account = await gather_all([one(a) for a in accounts])
    finally:
        ctx.progress.finish("hyperliquid_accounts")
    res = JobResult(details={"store": store_name, "accounts": {}})
    for acct, outcomes in zip(accounts, per_account, strict=True):
        if not outcomes:
            res.warnings.append(f"account {acct.name}: cancelled before it was pulled")
        res.details["accounts"][acct.name] = {str(o.pull): o.as_dict() for o in outcomes}
        _fold(res, outcomes)
    if p.markets and not ctx.cancel.is_set():
        res.details["markets"] = {}
        for name, puller in pullers.items():
            outcomes = await puller.markets(p.coins)
            res.details["markets"][name] = {str(o.pull): o.as_dict() for o in outcomes}
            _fold(res, outcomes)
    ctx.log.info("hyperliquid_accounts accounts=%d rows=%d errors=%d", len(accounts),
                 res.rows_written, len(res.errors))
    return res


def _fold(res: JobResult, outcomes: list[Outcome]) -> None:
    for o in outcomes:
        res.rows_written += o.rows
        res.warnings.extend(o.warnings)
        if o.error is not None:
            res.errors.append(f"{o.label}: {o.error}")


async def _plan(ctx: JobContext, p: HyperliquidAccountsParams, accounts: list[AccountConfig],
                pulls: list[Pull], store: str) -> list[str]:
    """What a run would pull, from where and since when, read from the stored cursors."""
    from candlekeep.accounts.cursors import CHECKPOINT_JOB, CURSOR_TAGS, cursor_key

    now = ctx.clock.now_ms()
    lookback = now - 30 * 86_400_000

    def default_start(pull: str) -> str:
        if p.since is not None:
            return f"from {fmt_ms(p.since)} (since)"
        if pull == Pull.FILLS:
            return "from the exchange's horizon (its 10,000 most recent fills)"
        return f"from {fmt_ms(max(0, lookback))} (30 days back)"

    lines = []
    for acct in accounts:
        url = _source_url(ctx, acct.source)
        parts = []
        for pull in pulls:
            if pull in INCREMENTAL or pull == Pull.ORDERS:
                at = await ctx.db.get_checkpoint(CHECKPOINT_JOB, cursor_key(
                    acct.source, acct.address, store, CURSOR_TAGS[pull]))
                if pull == Pull.ORDERS:
                    parts.append("orders " + (f"changed since {fmt_ms(at)}" if at is not None
                                              else "(the 2,000 most recent)"))
                else:
                    parts.append(f"{pull} " + (f"from {fmt_ms(at)} (cursor)" if at is not None
                                               else default_start(pull)))
            else:
                parts.append(str(pull))
        lines.append(f"account {acct.name} ({acct.address}) via source {acct.source} "
                     f"({url}): {'; '.join(parts)}; into store {store}")
    if p.markets:
        for name in dict.fromkeys(a.source for a in accounts):
            coins = ", ".join(p.coins) if p.coins else "every perpetual"
            lines.append(f"markets of source {name} ({_source_url(ctx, name)}): "
                         f"{MarketPull.ASSET_CONTEXTS}; {MarketPull.FUNDING_RATES} of {coins}, "
                         f"each from its cursor or {default_start(MarketPull.FUNDING_RATES)}; "
                         f"into store {store}")
    return lines


def _source_url(ctx: JobContext, name: str) -> str:
    from candlekeep.config.source_types import HyperliquidSourceConfig
    from candlekeep.core.text import redact_url

    cfg = ctx.config.sources.get(name)
    return redact_url(cfg.url) if isinstance(cfg, HyperliquidSourceConfig) else "?"

