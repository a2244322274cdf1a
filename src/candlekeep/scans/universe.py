"""Universes: which symbols a scan, a regime refresh or an order-book job covers.

A universe (``universes.<name>``) is a fixed list, or the top ``n`` symbols of its source by
average daily quote volume over the last ``days`` complete UTC days, ranked afresh on every
run from the ``1d`` candles in its store. Symbols left out for a reason (a stablecoin, no
daily candles in the window) are listed with it, so a caller can report them instead of
dropping them silently.

Ranking rules (deterministic):

* a day's quote volume is the candle's ``quote_volume``, or ``close * volume`` when the
  exchange gave none (those symbols are listed in ``Universe.estimated``);
* the average divides the window's sum by ``days``: a day without a candle counts as a day
  without trade, so a symbol listed three days ago ranks by what it actually traded;
* equal averages rank by symbol name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.scans import STABLECOINS, TopByVolume, UniverseConfig
from candlekeep.core.datasets import CANDLES
from candlekeep.core.errors import ConfigError
from candlekeep.core.timeframes import DAY_MS
from candlekeep.stores.base import Store

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime


@dataclass(frozen=True)
class Universe:
    """A universe as resolved for one run."""

    name: str
    source: str
    store: str
    symbols: tuple[str, ...]
    """In rank order for a top-by-volume universe, as configured for a fixed one."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Symbol → why it is not in ``symbols`` ("stablecoin", "no 1d candles in the last 30
    days"). Symbols merely ranked below the top ``n`` are not listed."""
    volumes: dict[str, float] = field(default_factory=dict)
    """Average daily quote volume of each ranked symbol (top-by-volume universes only)."""
    estimated: frozenset[str] = frozenset()
    """Ranked symbols with at least one day's quote volume estimated as close * volume."""


def source_store(config: Config, source: str) -> str | None:
    """Where a source's data is read and written when nothing names a store: the store of
    its first configured series, else the default store (None without stores)."""
    found = next((config.store_for(s) for s in config.series if s.source == source), None)
    return found or config.default_store


def universe_store(config: Config, name: str) -> str:
    """The store a universe reads: its own ``store``, else the store of its source's first
    configured series, else the default store."""
    u = _config(config, name)
    if u.store is not None:
        return u.store
    found = source_store(config, u.source)
    if found is None:
        raise ConfigError(config.file, f"universes.{name}.store", "no store to read",
                          "define a store (stores:) or name one in the universe")
    return found


def resolve_universe(stores: Runtime | Store, config: Config, name: str,
                     now_ms: int) -> Universe:
    """The universe ``name`` at ``now_ms``. ``stores`` is the runtime (the universe's store
    is opened from it) or the store to read. Blocking (reads the store): call it in a
    thread from a job. Unknown ``name`` → ConfigError listing the defined universes."""
    u = _config(config, name)
    store_name = universe_store(config, name)
    if u.top is None:
        assert u.symbols is not None, "validated: symbols or top"
        return Universe(name, u.source, store_name, tuple(dict.fromkeys(u.symbols)))
    store = stores if isinstance(stores, Store) else stores.store(store_name)
    return _top(store, name, u.source, store_name, u.top, now_ms)


def _top(store: Store, name: str, source: str, store_name: str, top: TopByVolume,
         now_ms: int) -> Universe:
    hi = now_ms // DAY_MS * DAY_MS  # today's candle is not complete: the window ends before
    lo = hi - top.days * DAY_MS
    window = f"no 1d candles in the last {top.days} days"
    known = {s.series.symbol for s in store.spans(source)
             if s.series.timeframe == "1d"}
    excluded: dict[str, str] = {}
    if top.exclude_stablecoins:
        excluded |= {s: "stablecoin" for s in known if is_stablecoin(s)}
    daily = store.read(CANDLES, where={"source": source, "timeframe": "1d"},
                       column="ts", lo=lo, hi=hi)
    ranked = _average_volumes(daily, top.days)
    names = ranked.column("symbol").to_pylist()
    avg = ranked.column("average").to_pylist()
    est = ranked.column("estimated").to_pylist()
    keep = [i for i, s in enumerate(names) if s not in excluded]
    chosen = keep[:top.n]
    excluded |= {s: window for s in sorted(known - set(names) - set(excluded))}
    return Universe(
        name, source, store_name, tuple(names[i] for i in chosen), dict(sorted(excluded.items())),
        {names[i]: avg[i] for i in chosen}, frozenset(names[i] for i in chosen if est[i]))


def _average_volumes(daily: pa.Table, days: int) -> pa.Table:
    """symbol, average (window sum ÷ ``days``), estimated (any day without quote_volume),
    ordered by average descending then symbol: one group-by over every symbol's rows."""
    qv = daily.column("quote_volume")
    quote = pc.coalesce(qv, pc.multiply(daily.column("close"), daily.column("volume")))
    t = pa.table({"symbol": daily.column("symbol"), "quote": quote,
                  "estimated": pc.is_null(qv)})
    agg = t.group_by("symbol", use_threads=False).aggregate(
        [("quote", "sum"), ("estimated", "any")])
    out = pa.table({"symbol": agg.column("symbol"),
                    "average": pc.divide(agg.column("quote_sum"), float(days)),
                    "estimated": agg.column("estimated_any")})
    return out.sort_by([("average", "descending"), ("symbol", "ascending")])


def is_stablecoin(symbol: str) -> bool:
    """Whether ``symbol``'s base (``USDC`` of ``USDC/USDT`` or ``USDC/USDT:USDT``) is a
    stablecoin of ``STABLECOINS``."""
    return symbol.split("/", 1)[0].upper() in STABLECOINS


def _config(config: Config, name: str) -> UniverseConfig:
    u = config.universes.get(name)
    if u is None:
        raise ConfigError(config.file, f"universes.{name}", f"unknown universe {name!r}",
                          f"defined: {', '.join(config.universes) or 'none'}")
    return u


__all__ = ["Universe", "is_stablecoin", "resolve_universe", "source_store", "universe_store"]
