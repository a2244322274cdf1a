"""From factors to a verdict: the regime-weighted score, each gate's value, threshold and
status, the pre-movement alert, and the top reasons per symbol.

A gate's status is ``pass``, ``fail`` or ``missing``; a value exactly at its threshold
passes (``>=`` / ``<=`` for every gate, the pre-movement ones included, so one boundary rule
holds everywhere). A missing input never passes: a symbol passes a profile only when every
gate passes, and a pre-movement group made of two conditions fails when either fails,
else is missing when either is missing (three-valued AND).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.config.scans import REGIME_WEIGHTS, Gates, PremoveConfig, ScansConfig, Weights
from candlekeep.scans.factors import FACTOR_NAMES

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


def check(name: str, input_: str, values: np.ndarray, op: str, threshold: float) -> Gate:
    """``values op threshold`` per symbol: at the threshold passes, NaN is missing."""
    with np.errstate(invalid="ignore"):
        ok = values >= threshold if op == ">=" else values <= threshold
    status = np.where(np.isnan(values), MISSING, np.where(ok, PASS, FAIL))
    return Gate(name, input_, op, float(threshold), values, status)


def all_of(*statuses: np.ndarray) -> np.ndarray:
    """Three-valued AND: fail if any fails, else missing if any is missing, else pass."""
    stacked = np.stack(statuses)
    return np.where((stacked == FAIL).any(axis=0), FAIL,
                    np.where((stacked == MISSING).any(axis=0), MISSING, PASS))


def column(table: pa.Table, name: str) -> np.ndarray:
    """A float column with nulls as NaN."""
    return np.asarray(table[name].to_numpy(zero_copy_only=False), float)


def score(factors: pa.Table, weights: Weights) -> np.ndarray:
    """``Σ wᵢ·factorᵢ / Σ wᵢ`` (the regime weights sum to 1; dividing keeps any weights on
    the 0-100 scale); NaN when a factor is missing (the symbol has a ``reason``)."""
    w = np.array([getattr(weights, name) for name in FACTOR_NAMES])
    matrix = np.column_stack([column(factors, name) for name in FACTOR_NAMES])
    return np.asarray(matrix @ w / w.sum()) if len(matrix) else np.zeros(0)


def profile_gates(factors: pa.Table, scores: np.ndarray, gates: Gates) -> list[Gate]:
    """The profile's set gates (an unset one is not applied), in ``Gates`` field order."""
    inputs = {"score": scores}
    out = []
    for field, (input_, op) in PROFILE_GATE_INPUTS.items():
        threshold = getattr(gates, field)
        if threshold is None:
            continue
        values = inputs[input_] if input_ in inputs else column(factors, input_)
        out.append(check(field, input_, values, op, threshold))
    return out


def funding_z(funding: pa.Table | None, symbols: pa.Array) -> np.ndarray:
    """Per symbol, how far its funding diverges from the universe's, in standard
    deviations: each venue's newest rate per coin (FUNDING_RATES rows: source, coin, time,
    funding_rate), averaged over venues per coin, then ``|rate - mean| / std`` across the
    coins of ``symbols`` (a symbol's coin is its base: ``BTC/USDT`` → ``BTC``). NaN (missing)
    without funding data, for a coin with none, or with fewer than 3 coins or no spread."""
    out = np.full(len(symbols), np.nan)
    if funding is None or funding.num_rows == 0:
        return out
    latest = (funding.sort_by([("time", "ascending")])
              .group_by(["source", "coin"], use_threads=False)
              .aggregate([("funding_rate", "last")]))
    per_coin = latest.group_by("coin").aggregate([("funding_rate_last", "mean")])
    coins = pc.list_element(pc.split_pattern(symbols, "/"), 0)
    where = pc.index_in(coins, value_set=per_coin["coin"])
    has = where.is_valid().to_numpy(zero_copy_only=False)
    rates = column(per_coin, "funding_rate_last_mean")[
        where.fill_null(0).to_numpy(zero_copy_only=False)]
    rates = np.where(has, rates, np.nan)
    present = rates[has]
    if len(np.unique(present)) < 2 or len(present) < 3:
        return out
    return np.asarray(np.abs(rates - present.mean()) / present.std(), float)


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
    gates = [
        check("funding_z", "funding_z", funding_z(funding, factors["symbol"].combine_chunks()),
              ">=", config.funding_z),
        check("squeeze_quality", "quality", column(factors, "quality"), ">=",
              config.squeeze_quality),
        check("squeeze_depth_usd", "depth_usd", column(factors, "depth_usd"), "<=",
              config.squeeze_max_depth_usd),
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
    w = np.array([getattr(weights, name) for name in FACTOR_NAMES]) / sum(
        getattr(weights, name) for name in FACTOR_NAMES)
    matrix = np.column_stack([column(factors, name) for name in FACTOR_NAMES])
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
            lines.append(f"{gate.name}: {gate.input} missing")
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
           "check", "column", "evaluate", "funding_z", "gate_lines", "premove",
           "profile_gates", "score", "top_reasons"]
