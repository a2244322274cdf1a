"""What the Hyperliquid sections share: their settings, the report's day, the accounts, each
account's last snapshot of the day, the day's targets and the markets listed that day.

Every read goes through ``Store.read`` (so a section works on DuckDB, PostgreSQL and
ClickHouse alike) and is bounded there: the day's time range, one account's address, one
snapshot time. What is left is reduced by SQL on the Arrow tables (an in-memory DuckDB,
``arrow_sql``): latest versions, last snapshots, sums per account and coin. Python only
walks the per-account, per-symbol results.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from candlekeep.accounts.datasets import ACCOUNT_SNAPSHOTS, ASSET_CTX_SNAPSHOTS
from candlekeep.core.datasets import Dataset
from candlekeep.core.timeutil import iso_ms
from candlekeep.reports.sections import Section, SectionError, SectionInput, section_params

if TYPE_CHECKING:
    from candlekeep.stores.base import Store

DAY_MS = 86_400_000
LAGS = (0, 1, 2, 3)
"""Tracking error is measured for targets of day D - lag against the actuals of day D."""
TARGET_COLUMNS = ("date", "symbol", "weight", "inserted_at")


class Day(StrEnum):
    """Which UTC day a section reports on."""

    PREVIOUS = "previous"
    """The last whole UTC day before the report's time (a morning report: yesterday)."""
    CURRENT = "current"
    """The UTC day the report's time falls in, up to that time."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = None
    """The store the account datasets are written to (default: the first store)."""
    accounts: list[str] | None = None
    """Configured account names to report on (default: every configured account, and any
    other address found in the store)."""


class TradesParams(_Params):
    top: int = Field(default=5, ge=1, le=100)
    """How many of an account's trades, largest notional first, to list."""


class TargetsParams(_Params):
    table: str = Field(min_length=1)
    """The targets table: columns date, symbol, weight, inserted_at; the latest
    ``inserted_at`` of a (date, symbol) is the target."""
    targets_store: str | None = None
    """The store holding ``table`` (default: ``store``)."""
    day: Day = Day.PREVIOUS
    mis_sized: float = Field(default=2.0, gt=0, le=100)
    """Percentage points of normalised weight beyond which a position is mis-sized."""


class MissingParams(TargetsParams):
    min_notional: float = Field(default=10.0, ge=0)
    """The exchange's smallest order value in USD (Hyperliquid: $10)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    address: str
    source: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's last snapshot of the day: its time and equity (account value)."""

    ts_ms: int
    equity: float | None


def arrow_sql(sql: str, params: Sequence[Any] = (), **tables: pa.Table) -> pa.Table:
    """Run ``sql`` over Arrow ``tables`` (referred to by their keyword names) in a private
    in-memory DuckDB with UTC as its time zone; the result as Arrow."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(sql, params=list(params) or None).to_arrow_table()
    finally:
        con.close()


def params_of(inp: SectionInput, section: Section) -> Any:
    """The section's settings in this report (checked already when the report resolved)."""
    return section_params(inp.runtime.config, inp.report, section)


def day_bounds(now_ms: int, day: Day) -> tuple[int, int]:
    """``[start, end)`` of the reported day in epoch ms (``current`` ends just after now)."""
    today = now_ms // DAY_MS * DAY_MS
    if day is Day.CURRENT:
        return today, now_ms + 1
    return today - DAY_MS, today


def day_name(start_ms: int) -> str:
    return (iso_ms(start_ms) or "")[:10]


def store_name(inp: SectionInput, given: str | None, key: str) -> str:
    name = given or inp.runtime.config.default_store
    if name is None:
        raise SectionError(f"reports.{inp.report}.params.{key}: no store configured")
    return name


def accounts(inp: SectionInput, params: _Params, found: Iterable[Account] = ()) -> list[
        Account]:
    """The accounts to report on: those named in ``params.accounts``, else every configured
    account and every other address in ``found`` (rows written before a rename, or by
    another node's config), ordered by name."""
    cfg = inp.runtime.config
    if params.accounts is not None:
        out = []
        for name in params.accounts:
            acct = cfg.account(name)
            if acct is None:
                raise SectionError(
                    f"reports.{inp.report}.params: unknown account {name!r} (configured: "
                    f"{', '.join(a.name for a in cfg.accounts) or 'none'})")
            out.append(Account(acct.name, acct.address, acct.source))
        return out
    by_address = {a.address: Account(a.name, a.address, a.source) for a in cfg.accounts}
    for a in found:
        by_address.setdefault(a.address, a)
    return sorted(by_address.values(), key=lambda a: (a.name, a.address))


def last_snapshots(st: Store, lo: int, hi: int) -> tuple[dict[str, Snapshot], list[Account]]:
    """Per address, the last account snapshot in ``[lo, hi)``; and the accounts seen."""
    table = st.read(ACCOUNT_SNAPSHOTS, column="snapshot_ts", lo=lo, hi=hi)
    last = arrow_sql(
        "SELECT address, arg_max(account, snapshot_ts) AS account, "
        "arg_max(source, snapshot_ts) AS source, epoch_ms(max(snapshot_ts)) AS ts, "
        "arg_max(account_value, snapshot_ts) AS equity FROM snaps GROUP BY address",
        snaps=table).to_pylist()
    snaps = {r["address"]: Snapshot(int(r["ts"]), r["equity"]) for r in last}
    seen = [Account(r["account"] or r["address"], r["address"], r["source"]) for r in last]
    return snaps, seen


def markets(st: Store, lo: int, hi: int) -> dict[str, dict[str, str]]:
    """The perpetuals listed in ``[lo, hi)``: per source, upper-cased coin → coin, from the
    market-context snapshots (a coin with a context that day is listed)."""
    table = st.read(ASSET_CTX_SNAPSHOTS, column="snapshot_ts", lo=lo, hi=hi)
    out: dict[str, dict[str, str]] = {}
    for r in arrow_sql("SELECT DISTINCT source, coin FROM ctx", ctx=table).to_pylist():
        out.setdefault(r["source"], {})[r["coin"].upper()] = r["coin"]
    return out


def listed(markets_by_source: Mapping[str, Mapping[str, str]], source: str | None
           ) -> Mapping[str, str]:
    """The account's source's markets; every source's when that one has none recorded
    (contexts written under another source name)."""
    if source is not None and markets_by_source.get(source):
        return markets_by_source[source]
    out: dict[str, str] = {}
    for coins in markets_by_source.values():
        out.update(coins)
    return out


_SUFFIX = re.compile(r"[-_](PERP|USD|USDC|USDT)$", re.IGNORECASE)


def normalise_symbol(symbol: str, market: Mapping[str, str] | None = None) -> str:
    """A target's symbol as Hyperliquid names the coin: the base of a CCXT symbol
    (``BTC/USDC:USDC`` → ``BTC``), without a ``-PERP`` style suffix, spelled as the market
    list spells it when it lists it under any case (``kpepe`` → ``kPEPE``)."""
    base = symbol.strip().split("/", 1)[0].split(":", 1)[0].strip()
    base = _SUFFIX.sub("", base) or base
    if market is not None:
        return market.get(base.upper(), base)
    return base


@dataclass(frozen=True, slots=True)
class Targets:
    """The targets of the days asked for: date (ISO) → symbol → weight as stored, the
    symbol as the table has it normalised (not yet to a market's spelling)."""

    by_date: dict[str, dict[str, float]]

    def of(self, date: str, market: Mapping[str, str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for symbol, weight in self.by_date.get(date, {}).items():
            name = normalise_symbol(symbol, market)
            out[name] = out.get(name, 0.0) + weight
        return out


def read_targets(inp: SectionInput, params: TargetsParams, first_ms: int, end_ms: int
                 ) -> Targets:
    """The targets table's rows dated in ``[first_ms, end_ms)``, the latest ``inserted_at``
    of each (date, normalised symbol); a missing weight reads as 0 (a later insert that
    clears a target)."""
    name = store_name(inp, params.targets_store or params.store, "targets_store")
    st = inp.runtime.store(name)
    ds = st.describe(params.table)
    if ds is None:
        tables = ", ".join(s.name for s in st.stats()) or "none"
        raise SectionError(f"store {name} has no targets table {params.table!r} (its "
                           f"tables: {tables}); set reports.{inp.report}.params.<section>."
                           "table")
    missing = [c for c in TARGET_COLUMNS if c not in ds.schema.names]
    if missing:
        raise SectionError(f"store {name}, targets table {params.table}: no column(s) "
                           f"{', '.join(missing)}; a targets table has {', '.join(TARGET_COLUMNS)}"
                           f" (its columns: {', '.join(ds.schema.names)})")
    lo, hi = _date_bounds(ds, name, first_ms, end_ms)
    table = st.read(ds, column="date", lo=lo, hi=hi).select(list(TARGET_COLUMNS))
    rows = arrow_sql(
        "WITH t AS (SELECT strftime(CAST(date AS DATE), '%Y-%m-%d') AS day, "
        "regexp_replace(split_part(split_part(trim(symbol), '/', 1), ':', 1), "
        "'[-_](PERP|USD|USDC|USDT)$', '', 'i') AS sym, "
        "CAST(coalesce(weight, 0) AS DOUBLE) AS w, inserted_at FROM targets "
        "WHERE symbol IS NOT NULL AND trim(symbol) <> '') "
        "SELECT day, sym, w FROM t QUALIFY row_number() OVER (PARTITION BY day, upper(sym) "
        "ORDER BY inserted_at DESC NULLS LAST, w) = 1", targets=table).to_pylist()
    by_date: dict[str, dict[str, float]] = {}
    for r in rows:
        by_date.setdefault(r["day"], {})[r["sym"]] = r["w"]
    return Targets(by_date)


def _date_bounds(ds: Dataset, store: str, lo_ms: int, hi_ms: int) -> tuple[Any, Any]:
    """The read's bounds in the type of the table's ``date`` column."""
    t = ds.schema.field("date").type
    if pa.types.is_timestamp(t):
        return lo_ms, hi_ms
    lo = dt.datetime.fromtimestamp(lo_ms / 1000, dt.UTC).date()
    hi = dt.datetime.fromtimestamp((hi_ms + DAY_MS - 1) // DAY_MS * DAY_MS / 1000,
                                   dt.UTC).date()
    if pa.types.is_date(t):
        return lo, hi
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return lo.isoformat(), hi.isoformat()  # ISO dates sort as text
    raise SectionError(f"store {store}, targets table {ds.name}: column date is {t}; use a "
                       "date, a timestamp or ISO text (YYYY-MM-DD)")


def pct(weight: float | None) -> float | None:
    """A weight (fraction) as percent, for ``Format.PERCENT`` cells; rounded to 1e-9 so that
    float noise (15.999…) does not floor a whole hundredth away."""
    return None if weight is None else round(weight * 100, 9)
