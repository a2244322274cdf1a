"""What the availability dataset says: a date's symbols, a symbol's dates, listings,
delistings and a summary, as typed views (``candlekeep availability ...`` and ``--json``).

Every query goes through ``Store.read``, so it answers the same on DuckDB, PostgreSQL and
ClickHouse with no SQL per engine. The dataset holds about 1,000 symbols by 2,500 dates, so
each read asks for the columns it needs only (a projection of the dataset: same table and
key, fewer columns), narrows by market, status or date in the store, and aggregates in
Arrow; no query walks the rows in Python but one symbol's timeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.availability.dataset import AVAILABILITY, ProbeStatus
from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.timeutil import iso_ms

if TYPE_CHECKING:
    from candlekeep.stores.base import Filter, Store

DEFAULT_MARKET = "futures/um"
PUBLICATION_BUFFER_DAYS = 3
"""Binance publishes a day's file up to about three days late: a date newer than the
newest probed date minus this is not settled (missing there is not news yet)."""
UNPROBED = "unprobed"
"""A timeline run of dates between probed ones that no probe covered."""
MAX_LISTED_ERRORS = 20


class NoAvailabilityData(CandlekeepError):
    """The store holds no availability rows for the market asked about."""


def _projection(*columns: str) -> Dataset:
    """The availability table read as the key plus ``columns``: ``Store.read`` selects the
    dataset's columns, so a narrower dataset of the same name reads only those."""
    names = [*AVAILABILITY.key, *(c for c in columns if c not in AVAILABILITY.key)]
    schema = pa.schema([AVAILABILITY.schema.field(n) for n in names])
    return Dataset(AVAILABILITY.name, schema, AVAILABILITY.key, time="date")


def _read(store: Store, columns: Sequence[str], where: Filter | None = None,
          lo: dt.date | None = None, hi: dt.date | None = None) -> pa.Table:
    """``columns`` (and those ``where`` filters on) of the rows matching ``where`` with
    ``lo <= date < hi``, by date then key."""
    wanted = [*columns, *(c for c in where or () if c not in columns)]
    return store.read(_projection(*wanted), where=where, column="date", lo=lo, hi=hi)


def require_data(store: Store, market: str) -> None:
    """NoAvailabilityData naming the store, the market and the fix when the store holds no
    row for ``market`` (one row is read to know)."""
    if store.read(_projection(), where={"market": market}, limit=1).num_rows:
        return
    markets = markets_of(store)
    have = f"; markets with data: {', '.join(markets)}" if markets else ""
    raise NoAvailabilityData(
        f"store {store.name} holds no availability data for market {market!r}{have}; run "
        "`candlekeep availability update` first")


def markets_of(store: Store) -> list[str]:
    """Markets the store holds availability rows for."""
    column = store.read(_projection()).column("market")
    return sorted(str(m) for m in pc.unique(column).to_pylist())


def _ms(value: Any) -> int | None:
    """A timestamp cell as epoch ms."""
    if value is None:
        return None
    return int(value.timestamp() * 1000)


def _status(value: str | None) -> ProbeStatus | str:
    """A stored status as a ProbeStatus; one this version does not know, as written."""
    try:
        return ProbeStatus(value or "")
    except ValueError:
        return value or ""


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Rows (symbol-dates) per probe status."""

    available: int = 0
    missing: int = 0
    error: int = 0

    @property
    def total(self) -> int:
        return self.available + self.missing + self.error


def _counts(status: pa.ChunkedArray | pa.Array) -> StatusCounts:
    found = {r["values"]: r["counts"] for r in pc.value_counts(status).to_pylist()}
    return StatusCounts(found.get(ProbeStatus.AVAILABLE.value, 0),
                        found.get(ProbeStatus.MISSING.value, 0),
                        found.get(ProbeStatus.ERROR.value, 0))


# ---- snapshot ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    symbol: str
    status: ProbeStatus | str
    size: int | None
    last_modified_ms: int | None
    error: str | None
    probed_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every probed symbol on one date, by symbol."""

    market: str
    date: dt.date
    counts: StatusCounts
    symbols: list[SymbolStatus]


def snapshot(store: Store, date: dt.date, market: str = DEFAULT_MARKET) -> Snapshot:
    require_data(store, market)
    t = _read(store, ("status", "size", "last_modified", "error", "probed_at"),
              {"market": market}, date, date + dt.timedelta(days=1))
    rows = [SymbolStatus(r["symbol"], _status(r["status"]), r["size"],
                         _ms(r["last_modified"]), r["error"], _ms(r["probed_at"]))
            for r in t.select(["symbol", "status", "size", "last_modified", "error",
                               "probed_at"]).to_pylist()]
    return Snapshot(market, date, _counts(t.column("status")), rows)


# ---- timeline ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRun:
    """Consecutive dates with one status (``unprobed``: dates no probe covered)."""

    status: ProbeStatus | str
    first: dt.date
    last: dt.date
    days: int


@dataclass(frozen=True, slots=True)
class Timeline:
    market: str
    symbol: str
    first_probed: dt.date | None
    last_probed: dt.date | None
    first_available: dt.date | None
    last_available: dt.date | None
    counts: StatusCounts
    runs: list[StatusRun]


def timeline(store: Store, symbol: str, market: str = DEFAULT_MARKET) -> Timeline:
    """One symbol's dates as runs of one status. NoAvailabilityData when the market has no
    rows, or none for ``symbol`` (an exchange id such as BTCUSDT)."""
    require_data(store, market)
    t = _read(store, ("status",), {"market": market, "symbol": symbol})
    if not t.num_rows:
        raise NoAvailabilityData(
            f"store {store.name}: no availability rows for symbol {symbol!r} in market "
            f"{market!r} (symbols are exchange ids such as BTCUSDT; `candlekeep availability "
            "snapshot DATE` lists them)")
    dates: list[dt.date] = t.column("date").to_pylist()
    statuses: list[str] = t.column("status").to_pylist()
    runs: list[StatusRun] = []
    for day, st in zip(dates, statuses, strict=True):
        status = _status(st)
        prev = runs[-1] if runs else None
        if prev is not None and prev.last + dt.timedelta(days=1) < day:
            runs.append(StatusRun(UNPROBED, prev.last + dt.timedelta(days=1),
                                  day - dt.timedelta(days=1), (day - prev.last).days - 1))
            prev = runs[-1]
        if prev is not None and prev.status == status:
            runs[-1] = StatusRun(status, prev.first, day, prev.days + 1)
        else:
            runs.append(StatusRun(status, day, day, 1))
    available = [d for d, s in zip(dates, statuses, strict=True)
                 if s == ProbeStatus.AVAILABLE.value]
    return Timeline(market, symbol, dates[0], dates[-1],
                    available[0] if available else None, available[-1] if available else None,
                    _counts(t.column("status")), runs)


# ---- range ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayCounts:
    date: dt.date
    available: int
    missing: int
    error: int

    @property
    def total(self) -> int:
        return self.available + self.missing + self.error


@dataclass(frozen=True, slots=True)
class RangeCounts:
    """Per date from ``start`` to ``end`` (both included): symbols per status; a date no
    probe covered shows zeros."""

    market: str
    start: dt.date
    end: dt.date
    days: list[DayCounts]
    totals: StatusCounts


def date_range(store: Store, start: dt.date, end: dt.date,
               market: str = DEFAULT_MARKET) -> RangeCounts:
    if end < start:
        raise CandlekeepError(f"range {start}..{end}: the end comes before the start; "
                              "give FROM then TO")
    require_data(store, market)
    t = _read(store, ("status",), {"market": market}, start, end + dt.timedelta(days=1))
    per: dict[tuple[dt.date, str], int] = {
        (r["date"], r["status"]): r["symbol_count"]
        for r in t.group_by(["date", "status"]).aggregate([("symbol", "count")]).to_pylist()}
    days = []
    for i in range((end - start).days + 1):
        d = start + dt.timedelta(days=i)
        days.append(DayCounts(d, per.get((d, ProbeStatus.AVAILABLE.value), 0),
                              per.get((d, ProbeStatus.MISSING.value), 0),
                              per.get((d, ProbeStatus.ERROR.value), 0)))
    return RangeCounts(market, start, end, days, _counts(t.column("status")))


# ---- listings and delistings -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    symbol: str
    first_available: dt.date


@dataclass(frozen=True, slots=True)
class NewListings:
    """Symbols whose first available date falls in ``[start, end]``."""

    market: str
    start: dt.date
    end: dt.date
    symbols: list[Listing]


def _available_spans(rows: pa.Table) -> pa.Table:
    """Per symbol of ``rows`` (date, symbol, status): first and last available date
    (``date_min``, ``date_max``)."""
    available = rows.filter(pc.equal(rows.column("status"), ProbeStatus.AVAILABLE.value))
    return available.group_by("symbol").aggregate([("date", "min"), ("date", "max")])


def new_listings(store: Store, date: dt.date, days: int = 1,
                 market: str = DEFAULT_MARKET) -> NewListings:
    """Symbols first available on ``date`` or in the ``days`` days ending on it.

    Only a symbol an earlier probe found without a file counts: one already available on
    the first date probed for it was listed at some unknown time before, not then."""
    if days < 1:
        raise CandlekeepError(f"--days {days}: give at least 1 (1: that date only)")
    require_data(store, market)
    start = date - dt.timedelta(days=days - 1)
    spans = _available_spans(_read(store, (), {"market": market,
                                               "status": ProbeStatus.AVAILABLE.value}))
    missing = _read(store, (), {"market": market, "status": ProbeStatus.MISSING.value})
    first_missing = missing.group_by("symbol").aggregate([("date", "min")]).rename_columns(
        ["symbol", "missing_min"])
    spans = spans.join(first_missing, "symbol", join_type="inner")
    first = spans.column("date_min")
    hits = spans.filter(pc.and_(
        pc.and_(pc.greater_equal(first, pa.scalar(start, pa.date32())),
                pc.less_equal(first, pa.scalar(date, pa.date32()))),
        pc.less(spans.column("missing_min"), first)))
    hits = hits.sort_by([("date_min", "ascending"), ("symbol", "ascending")])
    return NewListings(market, start, date, [Listing(r["symbol"], r["date_min"])
                                             for r in hits.to_pylist()])


@dataclass(frozen=True, slots=True)
class Delisting:
    symbol: str
    first_available: dt.date
    last_available: dt.date
    days_since: int
    """Days from its last available date to the newest probed date."""


@dataclass(frozen=True, slots=True)
class Delistings:
    """Symbols whose files stopped: last available before ``settled`` (the newest probed
    date minus the publication buffer)."""

    market: str
    newest_probed: dt.date
    buffer_days: int
    settled: dt.date
    symbols: list[Delisting]


def delistings(store: Store, market: str = DEFAULT_MARKET,
               buffer_days: int = PUBLICATION_BUFFER_DAYS) -> Delistings:
    if buffer_days < 0:
        raise CandlekeepError(f"--buffer {buffer_days}: give 0 or more days")
    require_data(store, market)
    rows = _read(store, ("status",), {"market": market})
    newest: dt.date = pc.max(rows.column("date")).as_py()
    settled = newest - dt.timedelta(days=buffer_days)
    spans = _available_spans(rows)
    gone = spans.filter(pc.less(spans.column("date_max"), pa.scalar(settled, pa.date32())))
    gone = gone.sort_by([("date_max", "descending"), ("symbol", "ascending")])
    return Delistings(market, newest, buffer_days, settled, [
        Delisting(r["symbol"], r["date_min"], r["date_max"], (newest - r["date_max"]).days)
        for r in gone.to_pylist()])


# ---- summary -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeError:
    date: dt.date
    symbol: str
    error: str | None


@dataclass(frozen=True, slots=True)
class MarketSummary:
    market: str
    first_date: dt.date
    last_date: dt.date
    dates: int
    """Distinct dates probed (``last - first + 1`` when nothing is skipped)."""
    symbols: int
    """Symbols ever probed."""
    symbols_ever_available: int
    settled_date: dt.date
    """The newest date outside the publication buffer."""
    available_on_settled_date: int
    counts: StatusCounts
    errors_outstanding: int
    """Symbol-dates whose latest probe ended in an error (the next run re-probes those in
    its lookback window)."""
    recent_errors: list[ProbeError]
    """The newest outstanding errors, at most ``MAX_LISTED_ERRORS``."""
    newest_probe_ms: int | None
    newest_probe_utc: str | None


@dataclass(frozen=True, slots=True)
class AvailabilitySummary:
    store: str
    buffer_days: int
    markets: list[MarketSummary]


def summary(store: Store, market: str | None = None,
            buffer_days: int = PUBLICATION_BUFFER_DAYS) -> AvailabilitySummary:
    """One summary per market (``market``: that one only). NoAvailabilityData when there
    is nothing to summarise."""
    if market is not None:
        require_data(store, market)
    t = store.read(_projection("status", "probed_at"),
                   where={"market": market} if market is not None else None)
    if not t.num_rows:
        raise NoAvailabilityData(f"store {store.name} holds no availability data; run "
                                 "`candlekeep availability update` first")
    out = []
    for m in sorted(pc.unique(t.column("market")).to_pylist()):
        part = t if market is not None else t.filter(pc.equal(t.column("market"), m))
        out.append(_market_summary(store, m, part, buffer_days))
    return AvailabilitySummary(store.name, buffer_days, out)


def _market_summary(store: Store, market: str, t: pa.Table,
                    buffer_days: int) -> MarketSummary:
    dates = t.column("date")
    span = pc.min_max(dates).as_py()
    first, last = span["min"], span["max"]
    settled = last - dt.timedelta(days=buffer_days)
    status = t.column("status")
    available = pc.equal(status, ProbeStatus.AVAILABLE.value)
    on_settled = pc.and_(available, pc.equal(dates, pa.scalar(settled, pa.date32())))
    errors = t.filter(pc.equal(status, ProbeStatus.ERROR.value))
    recent = _recent_errors(store, market, errors) if errors.num_rows else []
    newest = _ms(pc.max(t.column("probed_at")).as_py())
    return MarketSummary(
        market=market, first_date=first, last_date=last,
        dates=pc.count_distinct(dates).as_py(),
        symbols=pc.count_distinct(t.column("symbol")).as_py(),
        symbols_ever_available=pc.count_distinct(t.filter(available).column("symbol")).as_py(),
        settled_date=settled, available_on_settled_date=pc.sum(on_settled).as_py() or 0,
        counts=_counts(status), errors_outstanding=errors.num_rows, recent_errors=recent,
        newest_probe_ms=newest, newest_probe_utc=iso_ms(newest))


def _recent_errors(store: Store, market: str, errors: pa.Table) -> list[ProbeError]:
    """The newest outstanding errors with their messages (read for those rows only)."""
    newest = errors.sort_by([("date", "descending"), ("symbol", "ascending")])
    newest = newest.slice(0, MAX_LISTED_ERRORS)
    lo = pc.min(newest.column("date")).as_py()
    msgs = _read(store, ("error",), {"market": market, "status": ProbeStatus.ERROR.value},
                 lo, None)
    text = {(r["date"], r["symbol"]): r["error"] for r in msgs.to_pylist()}
    return [ProbeError(r["date"], r["symbol"], text.get((r["date"], r["symbol"])))
            for r in newest.select(["date", "symbol"]).to_pylist()]
