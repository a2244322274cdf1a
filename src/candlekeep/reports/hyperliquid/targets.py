"""Targets versus actuals: each account's positions at the day's last snapshot against the
target weights, as tracking error for lags 0..3 and a class per symbol.

Both sides are normalised to Σ|w| = 1: an actual weight is the position's signed notional
÷ equity, then ÷ Σ|notional ÷ equity| (so equity cancels out; it is shown for scale). The
tracking error of lag L is the mean |w_actual - w_target| over the symbols either side
holds (a zero on both sides is not a symbol held), targets of day D - L against the
actuals of day D; the best lag has the smallest error (the earliest on a tie). Symbols are
classified against the day's own targets (lag 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from candlekeep.accounts.datasets import ASSET_CTX_SNAPSHOTS, POSITIONS_SNAPSHOTS
from candlekeep.reports.hyperliquid.common import (
    DAY_MS,
    LAGS,
    Account,
    Snapshot,
    TargetsParams,
    accounts,
    arrow_sql,
    day_bounds,
    day_name,
    last_snapshots,
    listed,
    markets,
    params_of,
    pct,
    read_targets,
    store_name,
)
from candlekeep.reports.sections import Column, Format, Row, Section, SectionInput

if TYPE_CHECKING:
    from candlekeep.stores.base import Store


class Alignment(StrEnum):
    """How an account's position in a symbol compares with its target (in this order)."""

    MISSING = "missing"
    """A target other than zero, no position."""
    EXTRA = "extra"
    """A position, no target (or a target of zero)."""
    SIGN_FLIP = "sign_flip"
    """Long where the target is short, or short where it is long."""
    MIS_SIZED = "mis_sized"
    """The right side, more than ``mis_sized`` percentage points off the target."""
    ALIGNED = "aligned"


@dataclass(frozen=True, slots=True)
class SymbolWeights:
    symbol: str
    target: float
    """Normalised target weight (Σ|w| = 1 over the day's targets)."""
    actual: float
    """Normalised actual weight (Σ|w| = 1 over the account's positions)."""
    target_raw: float
    """The weight as the targets table has it."""
    notional: float
    """The position's signed notional in USD (0: no position)."""
    alignment: Alignment


@dataclass(frozen=True, slots=True)
class ClassTotal:
    alignment: Alignment
    symbols: int
    target_exposure: float
    """Σ|normalised target weight| of the class's symbols."""
    actual_exposure: float
    """Σ|normalised actual weight| of the class's symbols."""


@dataclass(frozen=True, slots=True)
class LagError:
    lag: int
    target_date: str
    tracking_error: float | None
    """None when there are no targets for ``target_date``."""


@dataclass(frozen=True, slots=True)
class AccountTracking:
    account: str
    address: str
    day: str
    snapshot_ms: int | None
    equity: float | None
    gross_notional: float
    """Σ|notional| of the positions at the snapshot (USD)."""
    lags: list[LagError] = field(default_factory=list)
    best_lag: int | None = None
    symbols: list[SymbolWeights] = field(default_factory=list)
    classes: list[ClassTotal] = field(default_factory=list)
    problem: str | None = None
    """Why there is nothing to compare (no snapshot, no targets), in words."""


@dataclass(frozen=True, slots=True)
class TrackingReport:
    day: str
    table: str
    accounts: list[AccountTracking]


def positions_at(st: Store, address: str, snap: Snapshot) -> dict[str, float]:
    """The account's signed notional per coin at its snapshot: the snapshot's position value
    with the size's sign, else size x the coin's latest mark at or before the snapshot."""
    pos = st.read(POSITIONS_SNAPSHOTS, where={"address": address, "snapshot_ts": snap.ts_ms})
    if pos.num_rows and pos.column("position_value").null_count:  # marks needed
        ctx = st.read(ASSET_CTX_SNAPSHOTS, column="snapshot_ts",
                      lo=snap.ts_ms // DAY_MS * DAY_MS, hi=snap.ts_ms + 1)
    else:
        ctx = ASSET_CTX_SNAPSHOTS.schema.empty_table()
    rows = arrow_sql(
        "SELECT p.coin, sum(coalesce(sign(p.szi) * abs(p.position_value), p.szi * m.mark))"
        " AS notional FROM pos p LEFT JOIN (SELECT coin, arg_max(mark_px, snapshot_ts) AS "
        "mark FROM ctx GROUP BY coin) m ON m.coin = p.coin WHERE p.szi <> 0 "
        "GROUP BY p.coin", pos=pos, ctx=ctx).to_pylist()
    return {r["coin"]: float(r["notional"] or 0.0) for r in rows}


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    gross = sum(abs(w) for w in weights.values())
    return {s: (w / gross if gross else 0.0) for s, w in weights.items() if w}


def tracking_error(actual: Mapping[str, float], target: Mapping[str, float]) -> float | None:
    """Mean |a - t| over the symbols either (normalised) side holds; None when neither
    holds any."""
    held = {s for s, w in actual.items() if w} | {s for s, w in target.items() if w}
    if not held:
        return None
    return sum(abs(actual.get(s, 0.0) - target.get(s, 0.0)) for s in held) / len(held)


def classify(actual: float, target: float, threshold: float) -> Alignment:
    if target and not actual:
        return Alignment.MISSING
    if actual and not target:
        return Alignment.EXTRA
    if math.copysign(1, actual) != math.copysign(1, target):
        return Alignment.SIGN_FLIP
    if abs(actual - target) > threshold:
        return Alignment.MIS_SIZED
    return Alignment.ALIGNED


def compute(inp: SectionInput, params: TargetsParams) -> TrackingReport:
    lo, hi = day_bounds(inp.now_ms, params.day)
    day = day_name(lo)
    st = inp.runtime.store(store_name(inp, params.store, "store"))
    snaps, seen = last_snapshots(st, lo, hi)
    targets = read_targets(inp, params, lo - max(LAGS) * DAY_MS, hi)
    listing = markets(st, lo, hi)
    out = []
    for acct in accounts(inp, params, seen):
        out.append(_account(st, acct, snaps.get(acct.address), targets.of, listing, day, lo,
                            params))
    return TrackingReport(day, params.table, out)


TargetsOf = Callable[[str, Mapping[str, str]], dict[str, float]]


def _account(st: Store, acct: Account, snap: Snapshot | None, targets_of: TargetsOf,
             listing: Mapping[str, Mapping[str, str]], day: str, lo: int,
             params: TargetsParams) -> AccountTracking:
    if snap is None:
        return AccountTracking(acct.name, acct.address, day, None, None, 0.0,
                               problem=f"no account snapshot on {day}")
    market = listed(listing, acct.source)
    by_lag = {lag: targets_of(day_name(lo - lag * DAY_MS), market) for lag in LAGS}
    notional = positions_at(st, acct.address, snap)
    gross = sum(abs(n) for n in notional.values())
    actual = _normalised(notional)
    lags = []
    for lag in LAGS:
        lagged = by_lag[lag]
        te = tracking_error(actual, _normalised(lagged)) if lagged else None
        lags.append(LagError(lag, day_name(lo - lag * DAY_MS), te))
    known = [le for le in lags if le.tracking_error is not None]
    best = min(known, key=lambda le: (le.tracking_error, le.lag)).lag if known else None
    base = AccountTracking(acct.name, acct.address, day, snap.ts_ms, snap.equity, gross, lags,
                           best)
    if not by_lag[0]:
        return replace(base, problem=f"no targets for {day} in table {params.table}")
    raw = by_lag[0]
    target = _normalised(raw)
    symbols = []
    for s in sorted(set(actual) | set(target)):
        a, t = actual.get(s, 0.0), target.get(s, 0.0)
        symbols.append(SymbolWeights(s, t, a, raw.get(s, 0.0), notional.get(s, 0.0),
                                     classify(a, t, params.mis_sized / 100)))
    classes = [ClassTotal(c, sum(1 for x in symbols if x.alignment is c),
                          sum(abs(x.target) for x in symbols if x.alignment is c),
                          sum(abs(x.actual) for x in symbols if x.alignment is c))
               for c in Alignment]
    return replace(base, symbols=symbols, classes=classes)


# -- the section's view ------------------------------------------------------------------------

COLUMNS = (
    Column("account"), Column("snapshot", Format.TIME), Column("equity", Format.NUMBER),
    *(Column(f"TE lag {lag}", Format.PERCENT) for lag in LAGS), Column("best lag"),
    Column("classes", max_chars=200), Column("off target", max_chars=400))

_SHORT = {Alignment.MISSING: "missing", Alignment.EXTRA: "extra",
          Alignment.SIGN_FLIP: "sign flip", Alignment.MIS_SIZED: "mis-sized",
          Alignment.ALIGNED: "aligned"}


def _exposure(c: ClassTotal) -> float:
    """What a class weighs: its actual exposure for extra positions, its target's else."""
    return c.actual_exposure if c.alignment is Alignment.EXTRA else c.target_exposure


def rows(report: TrackingReport) -> list[Row]:
    out: list[Row] = []
    for a in report.accounts:
        te = {le.lag: pct(le.tracking_error) for le in a.lags}
        classes = "; ".join(f"{_SHORT[c.alignment]} {c.symbols} ({_exposure(c):.1%})"
                            for c in a.classes if c.symbols)
        off = "; ".join(
            f"{s.symbol} {_SHORT[s.alignment]} (target {s.target:+.1%}, actual "
            f"{s.actual:+.1%})" for s in a.symbols if s.alignment is not Alignment.ALIGNED)
        out.append((a.account, a.snapshot_ms, a.equity, *(te.get(lag) for lag in LAGS),
                    None if a.best_lag is None else f"lag {a.best_lag}",
                    classes or None, a.problem or off or None))
    return out


def _rows(inp: SectionInput) -> list[Row]:
    return rows(compute(inp, params_of(inp, SECTION)))


SECTION = Section(
    name="hyperliquid_targets", title="Targets vs actuals", columns=COLUMNS, rows=_rows,
    note="Each account's positions at the day's last snapshot against the targets, both "
    "normalised to a gross of 100%. TE lag L: mean |actual - target| over the symbols either "
    "side holds, targets of L days earlier; the best lag is the smallest. Classes (count, "
    "exposure) and off-target symbols compare with the day's own targets.",
    empty="No Hyperliquid accounts configured or snapshotted.", limit=100,
    params=TargetsParams)
