"""From factors to a verdict: the regime-weighted score, each gate's value, threshold and
status, the pre-movement alert, and the top reasons per symbol.

A gate's status is ``pass``, ``fail`` or ``missing``; a value exactly at its threshold
passes (``>=`` / ``<=`` for every gate, the pre-movement ones included, so one boundary rule
holds everywhere). A missing input never passes: a symbol passes a profile only when every
gate passes, and a pre-movement group made of two conditions fails when either fails,
else is missing when either is missing (three-valued AND).

The spread and depth gates read a symbol's order book only while it is fresh: from a book
older than ``BOOK_FRESH_MS`` they are missing, and say so ("order book at ... : stale");
depth in a quote currency that is not USD-like is missing too (``factors.USD_QUOTES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.scans import REGIME_WEIGHTS, Gates, PremoveConfig, ScansConfig, Weights
from candlekeep.scans.factors import FACTOR_NAMES, USD_QUOTES, quote_of, utc_text

PASS, FAIL, MISSING = "pass", "fail", "missing"
PREMOVE = "premove"

PROFILE_GATE_INPUTS = {  # Gates field → (input column, op)
    "min_score": ("score", ">="),
    "min_vadr": ("vadr", ">="),
    "max_spread_bps": ("spread_bps", "<="),
    "min_depth_usd": ("depth_usd", ">="),
}
TOP_FACTORS = 2
"""How many of the largest weighted contributions a symbol's reasons name."""
BOOK_INPUTS = ("spread_bps", "depth_usd")
"""Gate inputs read from the order book: missing while the book is stale."""
FUNDING_MIN_OTHERS = 3
"""Coins with funding, besides the one judged, that its funding z-score needs."""


@dataclass(frozen=True)
class Gate:
    """One gate over every symbol: its input, comparison, threshold and per-symbol
    status (``values`` NaN where the input is missing)."""

    name: str
    input: str
    op: str
    threshold: float
    values: np.ndarray
    status: np.ndarray
    notes: np.ndarray | None = None  # per symbol, why the input is missing (or None)


def check(name: str, input_: str, values: np.ndarray, op: str, threshold: float,
          notes: np.ndarray | None = None) -> Gate:
    """``values op threshold`` per symbol: at the threshold passes, NaN is missing."""
    with np.errstate(invalid="ignore"):
        ok = values >= threshold if op == ">=" else values <= threshold
    status = np.where(np.isnan(values), MISSING, np.where(ok, PASS, FAIL))
    return Gate(name, input_, op, float(threshold), values, status, notes)


def gate_input(factors: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A gate's input column and, for the book inputs, why it is missing per symbol: NaN
    from a stale book ("order book at ... : stale") and, for depth, in a quote that is not
    USD-like; the factors table keeps a stale book's values for the record."""
    values = column(factors, name)
    if name not in BOOK_INPUTS:
        return values, None
    notes = np.full(factors.num_rows, None, object)
    has_book = factors["book_ts"].is_valid().to_numpy(zero_copy_only=False)
    if name == "depth_usd":
        quote = quote_of(factors["symbol"].combine_chunks())
        foreign = has_book & (quote != None) & ~np.isin(quote, list(USD_QUOTES))  # noqa: E711
        notes[foreign] = np.char.add(np.char.add("quote currency ", quote[foreign].astype(
            str)), " is not USD")
    stale = has_book & ~factors["fresh_book"].to_numpy(zero_copy_only=False)
    book_ms = factors["book_ts"].cast(pa.int64()).fill_null(0).to_numpy()
    notes[stale] = np.char.add(np.char.add("order book at ", utc_text(book_ms[stale]).astype(
        str)), ": stale")
    return np.where(stale, np.nan, values), notes


def all_of(*statuses: np.ndarray) -> np.ndarray:
    """Three-valued AND: fail if any fails, else missing if any is missing, else pass."""
    stacked = np.stack(statuses)
    return np.where((stacked == FAIL).any(axis=0), FAIL,
                    np.where((stacked == MISSING).any(axis=0), MISSING, PASS))


def column(table: pa.Table, name: str) -> np.ndarray:
    """A float column with nulls as NaN."""
    return np.asarray(table[name].to_numpy(zero_copy_only=False), float)


def _weighted(factors: pa.Table, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """The weights and the symbols-by-factors matrix, in ``FACTOR_NAMES`` order."""
    w = np.array([getattr(weights, name) for name in FACTOR_NAMES], float)
    matrix = np.column_stack([column(factors, name) for name in FACTOR_NAMES])
    return w, matrix


def score(factors: pa.Table, weights: Weights) -> np.ndarray:
    """``Σ wᵢ·factorᵢ / Σ wᵢ`` (the regime weights sum to 1; dividing keeps any weights on
    the 0-100 scale); NaN when a factor is missing (the symbol has a ``reason``)."""
    w, matrix = _weighted(factors, weights)
    return np.asarray(matrix @ w / w.sum()) if len(matrix) else np.zeros(0)


def profile_gates(factors: pa.Table, scores: np.ndarray, gates: Gates) -> list[Gate]:
    """The profile's set gates (an unset one is not applied), in ``Gates`` field order."""
    inputs = {"score": scores}
    out = []
    for field, (input_, op) in PROFILE_GATE_INPUTS.items():
        threshold = getattr(gates, field)
        if threshold is None:
            continue
        values, notes = (inputs[input_], None) if input_ in inputs else gate_input(
            factors, input_)
        out.append(check(field, input_, values, op, threshold, notes))
    return out


def funding_z(funding: pa.Table | None, symbols: pa.Array) -> np.ndarray:
    """Per symbol, how far its coin's funding diverges from the other coins' of
    ``symbols``, in standard deviations.

    "Funding-rate z-score across venues" reads: each venue's newest rate per coin
    (FUNDING_RATES rows: source, coin, time, funding_rate), averaged over the venues that
    fund the coin, then ``|rate - mean(others)| / std(others)`` with the mean and the sample
    standard deviation of the OTHER coins' rates (a symbol's coin is its base: ``BTC/USDT``
    → ``BTC``). Leaving the coin out matters: with it in the mean and spread, one outlier
    among n coins can score at most √(n-1), so a small universe could never reach 2.
    NaN (missing) without funding data, for a coin with none, with fewer than
    ``FUNDING_MIN_OTHERS`` other coins funded, or when the others' rates do not differ."""
    out = np.full(len(symbols), np.nan)
    if funding is None or funding.num_rows == 0:
        return out
    latest = (funding.sort_by([("time", "ascending")])
              .group_by(["source", "coin"], use_threads=False)
              .aggregate([("funding_rate", "last")]))
    per_coin = latest.group_by("coin").aggregate([("funding_rate_last", "mean")])
    coins = pc.list_element(pc.split_pattern(symbols, "/"), 0)
    wanted = pc.unique(coins)
    funded = pc.index_in(wanted, value_set=per_coin["coin"])
    keep = funded.is_valid()
    wanted, funded = wanted.filter(keep), funded.filter(keep)
    rates = column(per_coin, "funding_rate_last_mean")[funded.to_numpy(zero_copy_only=False)]
    if len(rates) < FUNDING_MIN_OTHERS + 1:
        return out
    # one row per coin: every other coin's rate (the coin itself masked out)
    others = np.where(np.eye(len(rates), dtype=bool), np.nan, rates[None, :])
    spread = np.nanstd(others, axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(rates - np.nanmean(others, axis=1)) / spread
    z = np.where(spread > 0, z, np.nan)
    where = pc.index_in(coins, value_set=wanted)
    has = where.is_valid().to_numpy(zero_copy_only=False)
    return np.where(has, z[where.fill_null(0).to_numpy(zero_copy_only=False)]
                    if len(z) else np.nan, np.nan)


@dataclass(frozen=True)
class Premove:
    """The pre-movement verdict per symbol: each group's status, how many passed and
    are missing, and ``alert`` (only when decided: enough groups passed, and in a
    volatile regime the volume confirmation passed too)."""

    gates: list[Gate]
    groups: dict[str, np.ndarray]
    confirmation: np.ndarray  # status; "pass" outside a volatile regime
    passed: np.ndarray
    missing: np.ndarray
    alert: np.ndarray
    status: np.ndarray  # "alert", "no alert", or "undetermined" (missing inputs could decide)


def premove(factors: pa.Table, regime: str, config: PremoveConfig,
            funding: pa.Table | None = None) -> Premove:
    """The three gates: funding divergence (``funding_z ≥ funding_z``), supply squeeze
    (quality ≥ squeeze_quality and depth ≤ squeeze_max_depth_usd) and accumulation (volume
    factor ≥ accumulation_volume and momentum ≥ accumulation_momentum); ``needed`` of them
    alert, and in a volatile regime only with volume confirmation (volume factor ≥
    accumulation_volume: a VADR of 2 or more)."""
    volume = column(factors, "volume")
    depth, depth_notes = gate_input(factors, "depth_usd")
    gates = [
        check("funding_z", "funding_z", funding_z(funding, factors["symbol"].combine_chunks()),
              ">=", config.funding_z),
        check("squeeze_quality", "quality", column(factors, "quality"), ">=",
              config.squeeze_quality),
        check("squeeze_depth_usd", "depth_usd", depth, "<=", config.squeeze_max_depth_usd,
              depth_notes),
        check("accumulation_volume", "volume", volume, ">=", config.accumulation_volume),
        check("accumulation_momentum", "momentum", column(factors, "momentum"), ">=",
              config.accumulation_momentum),
    ]
    groups = {"funding": gates[0].status, "squeeze": all_of(gates[1].status, gates[2].status),
              "accumulation": all_of(gates[3].status, gates[4].status)}
    if regime == "volatile":
        confirm = check("volume_confirmation", "volume", volume, ">=",
                        config.accumulation_volume)
        gates.append(confirm)
        confirmation = confirm.status
    else:
        confirmation = np.full(factors.num_rows, PASS)
    stacked = np.stack(list(groups.values()))
    passed = (stacked == PASS).sum(axis=0)
    missing = (stacked == MISSING).sum(axis=0)
    alert = (passed >= config.needed) & (confirmation == PASS)
    could = ((passed + missing >= config.needed) & (confirmation != FAIL)) & ~alert
    status = np.where(alert, "alert", np.where(could, "undetermined", "no alert"))
    return Premove(gates, groups, confirmation, passed, missing, alert, status)


def top_reasons(factors: pa.Table, scores: np.ndarray, weights: Weights,
                gates: list[Gate]) -> list[list[str]]:
    """Per symbol: why it was not scored; else its largest weighted contributions
    (``momentum 87.5 x 0.35 = 30.6``), then each gate that failed or is missing. Text for
    explain.json, one short list per symbol."""
    w, matrix = _weighted(factors, weights)
    w = w / w.sum()
    order = np.argsort(-(matrix * w), axis=1, kind="stable")[:, :TOP_FACTORS]
    unscored = factors["reason"].to_pylist()
    out: list[list[str]] = []
    for i, why in enumerate(unscored):
        lines = [f"not scored: {why}"] if np.isnan(scores[i]) and why else [
            f"{FACTOR_NAMES[j]} {matrix[i, j]:.1f} x {w[j]:.2f} = {matrix[i, j] * w[j]:.1f}"
            for j in order[i]]
        out.append(lines + gate_lines(gates, i))
    return out


def gate_lines(gates: list[Gate], i: int) -> list[str]:
    """Symbol ``i``'s gates that failed (``min_vadr: vadr 1.2 < 1.8``) or are missing."""
    lines = []
    for gate in gates:
        if gate.status[i] == FAIL:
            bound = "<" if gate.op == ">=" else ">"
            lines.append(f"{gate.name}: {gate.input} {gate.values[i]:.4g} {bound} "
                         f"{gate.threshold:g}")
        elif gate.status[i] == MISSING:
            note = gate.notes[i] if gate.notes is not None else None
            lines.append(f"{gate.name}: {gate.input} missing" + (f" ({note})" if note else ""))
    return lines


@dataclass(frozen=True)
class ScanResult:
    """One scan's verdicts over its factors table (row i of every array is row i of
    ``factors``); ``premove`` only for the premove profile, whose ``passed`` is its alert.
    ``why`` is SCAN_SIGNALS' reason: why not scored, else the gates that did not pass,
    None when passed."""

    profile: str
    regime: str
    weights: Weights
    factors: pa.Table
    scores: np.ndarray
    gates: list[Gate]
    passed: np.ndarray
    premove: Premove | None
    reasons: list[list[str]]
    why: list[str | None]


def evaluate(factors: pa.Table, profile: str, regime: str, config: ScansConfig,
             funding: pa.Table | None = None) -> ScanResult:
    """Score ``factors`` with ``regime``'s weights and apply ``profile``'s gates (the
    premove profile: the pre-movement gates instead)."""
    if regime not in REGIME_WEIGHTS:
        raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIME_WEIGHTS)}")
    weights = REGIME_WEIGHTS[regime]
    scores = score(factors, weights)
    scored = ~np.isnan(scores)
    pm = None
    if profile == PREMOVE:
        pm = premove(factors, regime, config.premove, funding)
        gates, passed = pm.gates, pm.alert
    else:
        gates = profile_gates(factors, scores, config.gates(profile))
        passed = scored & np.all([g.status == PASS for g in gates], axis=0) if gates \
            else scored
    unscored = factors["reason"].to_pylist()
    why: list[str | None] = [
        None if passed[i] else (unscored[i] if not scored[i] and unscored[i]
                                else "; ".join(gate_lines(gates, i)) or None)
        for i in range(factors.num_rows)]
    return ScanResult(profile, regime, weights, factors, scores, gates, passed, pm,
                      top_reasons(factors, scores, weights, gates), why)


__all__ = ["FAIL", "MISSING", "PASS", "PREMOVE", "Gate", "Premove", "ScanResult", "all_of",
           "check", "column", "evaluate", "funding_z", "gate_input", "gate_lines", "premove",
           "profile_gates", "score", "top_reasons"]
