"""One tracker update: list symbols, probe a window of dates, store, fetch volumes, validate.

The window is re-probed on every run because files arrive late: a date probed missing
today is probed again tomorrow, for ``lookback`` days. Rows go to the store as partial
upserts, so the probe and the volume figures never erase each other:

- a probe writes the probe columns (``PROBE_COLUMNS``);
- a probe that ends in an error where an earlier probe had a verdict (available or
  missing) writes only the ``error`` column: one failed HEAD does not unlearn a file;
- volumes write the volume columns (``VOLUME_COLUMNS``) of dates that have none yet.

The job (jobs/availability.py) resolves the config into an ``UpdatePlan`` and the
exchange's markets into ``ExchangeMarket`` rows; this module does the work, with one HTTP
client for every request of the run.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.availability.dataset import AVAILABILITY, PROBE_COLUMNS, ProbeStatus
from candlekeep.availability.listing import Listing, daily_prefix, list_symbols
from candlekeep.availability.probe import (
    DEFAULT_RETRY,
    Probe,
    ProbeTarget,
    make_client,
    probe_all,
)
from candlekeep.availability.validators import (
    Finding,
    LiveSymbols,
    Severity,
    completeness,
    continuity,
    cross_check,
    settled_until,
)
from candlekeep.availability.volumes import fetch_volumes
from candlekeep.core.clock import Clock
from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.schema import TS_TYPE
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period, day_ms
from candlekeep.sources.retry import RetryPolicy

log = logging.getLogger("candlekeep.availability")

EXAMPLES = 5


class AvailabilityStore(Protocol):
    """What the update needs of a store: ``jobs.facades.AsyncStore`` fits."""

    async def upsert(self, dataset: Dataset, batch: pa.Table) -> int: ...

    async def read(self, dataset: Dataset, **query: Any) -> pa.Table: ...


@dataclass(frozen=True, slots=True)
class ExchangeMarket:
    """One market the exchange lists (delisted ones too): its id, whether it trades."""

    market_id: str
    active: bool
    listing_ms: int | None = None
    contract_size: float | None = None
    """COIN-M only: volumes in its files count contracts of this size (see binance_volumes)."""


@dataclass(frozen=True, slots=True)
class ExchangeSymbols:
    """The exchange's markets, or why they could not be read."""

    markets: tuple[ExchangeMarket, ...] = ()
    problem: str | None = None
    geo_blocked: bool = False


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    market: Market
    data_type: str  # klines/1m
    base_url: str  # files: {base_url}/data/...
    listing_url: str | None  # the S3 bucket listing; None: exchange symbols only
    dates: tuple[dt.date, ...]  # ascending
    concurrency: int = 32
    timeout_s: float = 30.0
    volumes: bool = False
    min_symbols: int = 1
    publication_buffer_days: int = 3
    cross_check_min: float = 0.95
    retry: RetryPolicy = DEFAULT_RETRY

    @property
    def interval(self) -> str:
        return self.data_type.split("/", 1)[1]


@dataclass
class UpdateReport:
    symbols: int = 0
    exchange_symbols: int = 0
    listing_symbols: int = 0
    archive_only: int = 0
    probes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kept_on_error: int = 0
    volumes: int = 0
    rows_written: int = 0
    requests: int = 0
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def details(self, plan: UpdatePlan) -> dict[str, Any]:
        return {
            "market": plan.market.value, "data_type": plan.data_type,
            "from": plan.dates[0].isoformat() if plan.dates else None,
            "to": plan.dates[-1].isoformat() if plan.dates else None,
            "symbols": self.symbols, "exchange_symbols": self.exchange_symbols,
            "listing_symbols": self.listing_symbols, "archive_only": self.archive_only,
            "probes": self.probes,
            **{s.value: self.statuses.get(s.value, 0) for s in ProbeStatus},
            "kept_on_error": self.kept_on_error, "volumes": self.volumes,
            "validators": [f.as_dict() for f in self.findings],
        }


def projection(*columns: str) -> Dataset:
    """The availability table read as its key plus ``columns`` (``Store.read`` selects
    the dataset's columns, so a narrower dataset of the same name reads only those)."""
    names = [*AVAILABILITY.key, *(c for c in columns if c not in AVAILABILITY.key)]
    return Dataset(AVAILABILITY.name, pa.schema([AVAILABILITY.schema.field(n) for n in names]),
                   AVAILABILITY.key, time="date")


async def run_update(plan: UpdatePlan, store: AvailabilityStore, exchange: ExchangeSymbols,
                     *, clock: Clock, rng: random.Random | None = None,
                     progress: Callable[[int], None] | None = None,
                     on_total: Callable[[int], None] | None = None) -> UpdateReport:
    rng = rng or random.Random()
    report = UpdateReport()
    if not plan.dates:
        raise CandlekeepError("availability update: no date to probe")
    await _check_data_type(store, plan)
    today = dt.datetime.fromtimestamp(clock.now_ms() / 1000, dt.UTC).date()
    settled = settled_until(today, plan.publication_buffer_days)
    t0 = time.monotonic()
    client = make_client(plan.concurrency, plan.timeout_s)
    try:
        listing = await _listing(client, plan, clock, rng, report)
        log.debug("availability listing symbols=%d in %.2fs",
                  len(listing.symbols) if listing else 0, time.monotonic() - t0)
        exchange_ids = {m.market_id: m for m in exchange.markets}
        listed = set(listing.symbols if listing else ())
        symbols = sorted(set(exchange_ids) | listed)
        report.symbols, report.exchange_symbols = len(symbols), len(exchange_ids)
        report.listing_symbols = len(listed)
        report.archive_only = len(listed - set(exchange_ids))
        if not symbols:
            why = f" (exchange: {exchange.problem})" if exchange.problem else ""
            report.errors.append("no symbol to probe: neither the exchange nor the archive "
                                 f"listing named one{why}")
            return report
        targets = _targets(plan, symbols, exchange_ids)
        if on_total is not None:
            on_total(len(targets))
        stored = await _stored_window(store, plan)
        t1 = time.monotonic()
        probes = await probe_all(client, targets, concurrency=plan.concurrency, clock=clock,
                                 retry=plan.retry, rng=rng, on_done=progress)
        log.debug("availability probes=%d in %.2fs", len(probes), time.monotonic() - t1)
        report.probes = len(probes)
        report.requests += sum(p.attempts for p in probes)
        report.rows_written += await _write_probes(store, plan, probes, stored, clock, report)
        if plan.volumes:
            await _volumes(client, store, plan, exchange, probes, stored, clock, report)
    finally:
        await client.aclose()
    t2 = time.monotonic()
    history = await store.read(projection("status"), where={"market": plan.market.value})
    _validate(plan, history, exchange, settled, report)
    log.debug("availability validated rows=%d in %.2fs (run %.2fs)", history.num_rows,
              time.monotonic() - t2, time.monotonic() - t0)
    return report


async def _check_data_type(store: AvailabilityStore, plan: UpdatePlan) -> None:
    """The dataset's key has no data type: one store tracks one data type per market."""
    one = await store.read(projection("data_type"), where={"market": plan.market.value},
                           limit=1)
    if one.num_rows:
        held = one["data_type"][0].as_py()
        if held is not None and held != plan.data_type:
            raise CandlekeepError(
                f"the store already tracks {held} for {plan.market.value}, not "
                f"{plan.data_type}: one store keeps one data type per market (use another "
                "store for this job, or the data type the store holds)")


async def _listing(client: Any, plan: UpdatePlan, clock: Clock, rng: random.Random,
                   report: UpdateReport) -> Listing | None:
    if not plan.listing_url:
        return None
    listing = await list_symbols(client, plan.listing_url,
                                 daily_prefix(plan.market, plan.data_type), clock=clock,
                                 retry=plan.retry, rng=rng)
    report.requests += listing.requests
    if listing.error is not None:
        # Probes still run for what is known; the run fails, as its symbol list may be short.
        report.errors.append(listing.error)
    return listing


def _targets(plan: UpdatePlan, symbols: Sequence[str],
             exchange_ids: dict[str, ExchangeMarket]) -> list[ProbeTarget]:
    """Every (symbol, date) of the window, but dates before a symbol's known listing day."""
    interval = plan.interval
    targets: list[ProbeTarget] = []
    for symbol in symbols:
        m = exchange_ids.get(symbol)
        first = (dt.datetime.fromtimestamp(m.listing_ms / 1000, dt.UTC).date()
                 if m is not None and m.listing_ms is not None else None)
        for day in plan.dates:
            if first is not None and day < first:
                continue
            f = ArchiveFile(plan.market, symbol, interval, Period.DAILY, day)
            targets.append(ProbeTarget(symbol, day, f.url(plan.base_url)))
    targets.sort(key=lambda t: t.day)  # date by date: an early stop leaves whole dates
    return targets


async def _stored_window(store: AvailabilityStore, plan: UpdatePlan,
                         ) -> dict[tuple[str, dt.date], tuple[str | None, bool]]:
    """Per stored (symbol, date) of the window: its status, and whether it has volumes."""
    table = await store.read(projection("status", "volume"),
                             where={"market": plan.market.value}, column="date",
                             lo=plan.dates[0], hi=plan.dates[-1] + dt.timedelta(days=1))
    return {(s, d): (st, v is not None) for s, d, st, v in zip(
        table["symbol"].to_pylist(), table["date"].to_pylist(), table["status"].to_pylist(),
        table["volume"].to_pylist(), strict=True)}


async def _write_probes(store: AvailabilityStore, plan: UpdatePlan, probes: Sequence[Probe],
                        stored: dict[tuple[str, dt.date], tuple[str | None, bool]],
                        clock: Clock, report: UpdateReport) -> int:
    verdicts: list[Probe] = []
    error_only: list[Probe] = []
    failed: list[Probe] = []
    for p in probes:
        report.statuses[p.status.value] += 1
        if p.status is ProbeStatus.ERROR:
            failed.append(p)
            known = stored.get((p.target.symbol, p.target.day), (None, False))[0]
            if known in (ProbeStatus.AVAILABLE.value, ProbeStatus.MISSING.value):
                error_only.append(p)
                continue
        verdicts.append(p)
    report.kept_on_error = len(error_only)
    if failed:
        shown = "; ".join(p.error or "" for p in failed[:EXAMPLES])
        more = f" and {len(failed) - EXAMPLES} more" if len(failed) > EXAMPLES else ""
        kept = (f" ({len(error_only)} keep their earlier verdict)" if error_only else "")
        report.warnings.append(f"{len(failed)} probes failed after retries, recorded as "
                               f"errors{kept}: {shown}{more}")
    now = clock.now_ms()
    written = 0
    if verdicts:
        written += await store.upsert(AVAILABILITY, _probe_batch(plan, verdicts, now))
    if error_only:
        batch = pa.table({
            "market": pa.array([plan.market.value] * len(error_only), pa.string()),
            "date": pa.array([p.target.day for p in error_only], pa.date32()),
            "symbol": pa.array([p.target.symbol for p in error_only], pa.string()),
            "error": pa.array([p.error for p in error_only], pa.string()),
        })
        written += await store.upsert(AVAILABILITY, batch)
    return written


def _probe_batch(plan: UpdatePlan, probes: Sequence[Probe], now_ms: int) -> pa.Table:
    n = len(probes)
    status = [p.status.value for p in probes]
    return pa.table({
        "market": pa.array([plan.market.value] * n, pa.string()),
        "date": pa.array([p.target.day for p in probes], pa.date32()),
        "symbol": pa.array([p.target.symbol for p in probes], pa.string()),
        "data_type": pa.array([plan.data_type] * n, pa.string()),
        "status": pa.array(status, pa.string()),
        "available": pa.array([s == ProbeStatus.AVAILABLE.value for s in status], pa.bool_()),
        "size": pa.array([p.size for p in probes], pa.int64()),
        "last_modified": pa.array([p.last_modified_ms for p in probes], pa.int64()).cast(TS_TYPE),
        "url": pa.array([p.target.url for p in probes], pa.string()),
        "error": pa.array([p.error for p in probes], pa.string()),
        "probed_at": pa.array([now_ms] * n, pa.int64()).cast(TS_TYPE),
    }, schema=pa.schema([AVAILABILITY.schema.field(c) for c in PROBE_COLUMNS]))


async def _volumes(client: Any, store: AvailabilityStore, plan: UpdatePlan,
                   exchange: ExchangeSymbols, probes: Sequence[Probe],
                   stored: dict[tuple[str, dt.date], tuple[str | None, bool]], clock: Clock,
                   report: UpdateReport) -> None:
    wanted = [(p.target.symbol, p.target.day) for p in probes
              if p.status is ProbeStatus.AVAILABLE
              and not stored.get((p.target.symbol, p.target.day), (None, False))[1]]
    if not wanted:
        return
    sizes = {m.market_id: m.contract_size for m in exchange.markets
             if m.contract_size is not None}
    result = await fetch_volumes(client, plan.base_url, plan.market, wanted,
                                 concurrency=plan.concurrency, clock=clock, retry=plan.retry,
                                 contract_sizes=sizes)
    report.requests += result.requests
    report.volumes = len(result.found)
    if result.found:
        report.rows_written += await store.upsert(AVAILABILITY, result.batch(plan.market))
    if result.failures:
        shown = "; ".join(result.failures[:EXAMPLES])
        more = (f" and {len(result.failures) - EXAMPLES} more"
                if len(result.failures) > EXAMPLES else "")
        report.warnings.append(f"volumes: {len(result.failures)} daily 1d files could not "
                               f"be used (tried again next run): {shown}{more}")


def _validate(plan: UpdatePlan, history: pa.Table, exchange: ExchangeSymbols,
              settled: dt.date, report: UpdateReport) -> None:
    lo, hi = plan.dates[0], plan.dates[-1]
    dates = history["date"]
    window = history.filter(pc.and_(pc.greater_equal(dates, pa.scalar(lo, pa.date32())),
                                    pc.less_equal(dates, pa.scalar(hi, pa.date32()))))
    avail = window.filter(pc.equal(window["status"], ProbeStatus.AVAILABLE.value))
    per_date = Counter(avail["date"].to_pylist())
    judged = [d for d in plan.dates if d <= settled]
    newest = judged[-1] if judged else None
    on_newest = {s for s, d in zip(avail["symbol"].to_pylist(), avail["date"].to_pylist(),
                                   strict=True) if d == newest}
    findings = [
        continuity(history, settled=settled),
        completeness(per_date, plan.dates, min_symbols=plan.min_symbols, settled=settled),
        cross_check(_live(exchange, newest), on_newest, newest, minimum=plan.cross_check_min),
    ]
    report.findings = findings
    for f in findings:
        if f.severity is Severity.WARNING:
            report.warnings.append(f.line)
        elif f.severity is Severity.ERROR:
            report.errors.append(f.line)


def _live(exchange: ExchangeSymbols, day: dt.date | None) -> LiveSymbols:
    """The trading symbols listed before ``day`` ended (a newer one cannot have its file)."""
    if exchange.problem is not None and not exchange.markets:
        return LiveSymbols(None, exchange.problem, exchange.geo_blocked)
    end = day_ms(day + dt.timedelta(days=1)) if day is not None else None
    return LiveSymbols(frozenset(
        m.market_id for m in exchange.markets
        if m.active and (end is None or m.listing_ms is None or m.listing_ms < end)))
