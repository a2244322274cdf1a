"""Scores, gate boundaries (at the threshold passes, just past fails), missing inputs, and
the pre-movement alert."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from candlekeep.config.scans import PROFILE_GATES, REGIME_WEIGHTS, PremoveConfig, ScansConfig
from candlekeep.scans.factors import FACTORS_SCHEMA
from candlekeep.scans.scoring import (
    FAIL,
    MISSING,
    PASS,
    check,
    evaluate,
    funding_z,
    premove,
    profile_gates,
    score,
)

NAN = math.nan


def factors(*rows: dict[str, Any]) -> pa.Table:
    """A factors table from a few columns per row (the rest null / False)."""
    base = {"bars": 100, "fresh_candles": True, "fresh_book": True, "fresh": True}
    return pa.Table.from_pylist([base | r for r in rows], schema=FACTORS_SCHEMA)


def below(x: float) -> float:
    return float(np.nextafter(x, -math.inf))


def above(x: float) -> float:
    return float(np.nextafter(x, math.inf))


def test_check_at_threshold_passes_just_past_fails_nan_missing() -> None:
    ge = check("g", "x", np.array([2.0, below(2.0), above(2.0), NAN]), ">=", 2.0)
    assert ge.status.tolist() == [PASS, FAIL, PASS, MISSING]
    le = check("g", "x", np.array([2.0, below(2.0), above(2.0), NAN]), "<=", 2.0)
    assert le.status.tolist() == [PASS, PASS, FAIL, MISSING]


def test_score_is_the_regime_weighted_mean_and_missing_stays_missing() -> None:
    t = factors({"symbol": "A", "momentum": 80, "technical": 60, "volume": 70, "quality": 50},
                {"symbol": "B", "momentum": 80, "technical": None, "volume": 70,
                 "quality": 50, "reason": "fewer than 15 bars for RSI(14)"})
    got = score(t, REGIME_WEIGHTS["calm"])
    assert got[0] == pytest.approx(0.40 * 80 + 0.30 * 60 + 0.20 * 70 + 0.10 * 50)
    assert math.isnan(got[1])


def hot_row(symbol: str, **values: float) -> dict[str, Any]:
    row: dict[str, Any] = {"symbol": symbol, "vadr": 1.8, "spread_bps": 50.0,
                           "depth_usd": 100_000.0}
    return row | values


@pytest.mark.parametrize(("field", "column", "at", "past"), [
    ("min_vadr", "vadr", 1.8, below(1.8)),
    ("max_spread_bps", "spread_bps", 50.0, above(50.0)),
    ("min_depth_usd", "depth_usd", 100_000.0, below(100_000.0)),
])
def test_hot_gate_boundaries(field: str, column: str, at: float, past: float) -> None:
    t = factors(hot_row("AT", **{column: at}), hot_row("PAST", **{column: past}),
                hot_row("NONE", **{column: None}))
    gates = {g.name: g for g in profile_gates(t, np.array([75.0] * 3), PROFILE_GATES["hot"])}
    assert list(gates) == ["min_score", "min_vadr", "max_spread_bps", "min_depth_usd"]
    assert gates[field].status.tolist() == [PASS, FAIL, MISSING]
    assert gates[field].threshold == at
    assert gates["min_score"].status.tolist() == [PASS] * 3


@pytest.mark.parametrize(("profile", "threshold"), [("hot", 75.0), ("warm", 65.0)])
def test_score_gate_boundary(profile: str, threshold: float) -> None:
    t = factors(*(hot_row(s) for s in ("AT", "PAST", "NONE")))
    scores = np.array([threshold, below(threshold), NAN])
    gates = {g.name: g for g in profile_gates(t, scores, ScansConfig().gates(profile))}
    assert gates["min_score"].status.tolist() == [PASS, FAIL, MISSING]
    if profile == "warm":
        assert list(gates) == ["min_score"]


def test_evaluate_hot_passes_only_with_every_gate_and_explains_the_rest() -> None:
    good = {"momentum": 90.0, "technical": 80.0, "volume": 70.0, "quality": 60.0}
    t = factors(hot_row("GOOD/USDT", **good),
                hot_row("THIN/USDT", **good, depth_usd=50_000.0),
                {"symbol": "NONE/USDT", "reason": "no candles; no order book", "bars": 0})
    result = evaluate(t, "hot", "normal", ScansConfig())
    assert result.passed.tolist() == [True, False, False]
    assert result.why[0] is None
    assert result.why[1] == "min_depth_usd: depth_usd 5e+04 < 100000"
    assert result.why[2] == "no candles; no order book"
    assert result.reasons[0][0] == "momentum 90.0 x 0.35 = 31.5"
    assert result.reasons[2][0] == "not scored: no candles; no order book"
    assert "min_score: score missing" in result.reasons[2]
    assert [g.status[2] for g in result.gates] == [MISSING] * 4


def test_custom_profile_without_gates_passes_what_is_scored() -> None:
    t = factors({"symbol": "A", "momentum": 1, "technical": 1, "volume": 1, "quality": 1},
                {"symbol": "B", "reason": "no candles", "bars": 0})
    result = evaluate(t, "custom", "calm", ScansConfig())
    assert result.gates == [] and result.passed.tolist() == [True, False]


def test_a_stale_book_or_a_foreign_quote_leaves_the_book_gates_missing() -> None:
    now = 1_700_000_000_000
    fresh = {"book_ts": now, "fresh_book": True}
    stale = {"book_ts": now - 31 * 60_000, "fresh_book": False}
    t = factors(hot_row("A/USDT", **fresh), hot_row("B/USDT", **stale),
                hot_row("C/BTC", depth_usd=None, **fresh))
    gates = {g.name: g for g in profile_gates(t, np.full(3, 80.0), PROFILE_GATES["hot"])}
    assert gates["max_spread_bps"].status.tolist() == [PASS, MISSING, PASS]
    assert gates["min_depth_usd"].status.tolist() == [PASS, MISSING, MISSING]
    result = evaluate(t, "hot", "normal", ScansConfig())
    assert result.why[1] == ("min_score: score missing; "  # no factors in this table
                             "max_spread_bps: spread_bps missing (order book at 2023-11-14 "
                             "21:42 UTC: stale); min_depth_usd: depth_usd missing (order "
                             "book at 2023-11-14 21:42 UTC: stale)")
    assert "min_depth_usd: depth_usd missing (quote currency BTC is not USD)" in result.why[2]
    pm = premove(t, "normal", PremoveConfig())
    assert pm.gates[2].name == "squeeze_depth_usd"
    assert pm.gates[2].status.tolist() == [FAIL, MISSING, MISSING]


def test_unknown_regime_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="calm, normal, volatile"):
        evaluate(factors(), "hot", "sideways", ScansConfig())


def pm_row(symbol: str, **values: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"symbol": symbol, "quality": 70.0, "depth_usd": 80_000.0,
                           "volume": 75.0, "momentum": 70.0}
    return row | values


@pytest.mark.parametrize(("column", "past", "gate", "group"), [
    ("quality", below(70.0), "squeeze_quality", "squeeze"),
    ("depth_usd", above(80_000.0), "squeeze_depth_usd", "squeeze"),
    ("volume", below(75.0), "accumulation_volume", "accumulation"),
    ("momentum", below(70.0), "accumulation_momentum", "accumulation"),
])
def test_premove_gate_boundaries(column: str, past: float, gate: str, group: str) -> None:
    t = factors(pm_row("AT"), pm_row("PAST", **{column: past}),
                pm_row("NONE", **{column: None}))
    pm = premove(t, "normal", PremoveConfig())
    gates = {g.name: g for g in pm.gates}
    assert gates[gate].status.tolist() == [PASS, FAIL, MISSING]
    assert pm.groups[group].tolist() == [PASS, FAIL, MISSING]
    assert gates["funding_z"].status.tolist() == [MISSING] * 3  # no funding data given
    # squeeze and accumulation both pass at the boundary: 2 of 3 alert without funding
    assert pm.alert.tolist() == [True, False, False]
    # one group passed, one failed or missing: the missing funding could still decide
    assert pm.status.tolist() == ["alert", "undetermined", "undetermined"]
    assert pm.passed.tolist() == [2, 1, 1] and pm.missing.tolist() == [1, 1, 2]


def funding(rates: dict[str, list[tuple[str, int, float]]]) -> pa.Table:
    rows = [{"source": venue, "coin": coin, "time": t, "funding_rate": r, "premium": 0.0,
             "ingested_at": 0} for coin, per in rates.items() for venue, t, r in per]
    schema = pa.schema([("source", pa.string()), ("coin", pa.string()),
                        ("time", pa.timestamp("ms", tz="UTC")), ("funding_rate", pa.float64()),
                        ("premium", pa.float64()), ("ingested_at", pa.timestamp("ms", tz="UTC"))])
    return pa.Table.from_pylist(rows, schema=schema)


def leave_one_out_z(rates: dict[str, float], coin: str) -> float:
    others = [r for c, r in rates.items() if c != coin]
    return abs(rates[coin] - statistics.mean(others)) / statistics.stdev(others)


def test_funding_z_is_the_venue_mean_against_the_other_coins() -> None:
    table = funding({
        "AAA": [("x", 1, 0.5), ("x", 2, 0.0001), ("y", 1, 0.0003)],  # x's newest is 0.0001
        "BBB": [("x", 1, 0.0001)], "CCC": [("y", 1, 0.0004)], "DDD": [("x", 1, 0.0009)]})
    symbols = pa.array(["AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "EEE/USDT",
                        "DDD/USDC"])
    rates = {"AAA": 0.0002, "BBB": 0.0001, "CCC": 0.0004, "DDD": 0.0009}
    got = funding_z(table, symbols)
    want = [leave_one_out_z(rates, c) for c in ("AAA", "BBB", "CCC", "DDD")]
    assert got[:4] == pytest.approx(want, rel=1e-9)
    assert math.isnan(got[4])  # EEE: no funding
    assert got[5] == got[3]  # one coin, two quotes: the same z
    assert np.isnan(funding_z(None, symbols)).all()
    three = funding({"AAA": [("x", 1, 0.05)], "BBB": [("x", 1, 0.0001)],
                     "CCC": [("x", 1, 0.0002)]})
    assert np.isnan(funding_z(three, symbols)).all()  # two others: too few to judge by
    flat = funding({"AAA": [("x", 1, 0.05)], **{c: [("x", 1, 0.0001)] for c in
                                                ("BBB", "CCC", "DDD")}})
    assert np.isnan(funding_z(flat, symbols)[0])  # the others do not differ: no scale


def test_one_diverging_coin_among_few_passes_the_default_gate() -> None:
    """Four coins, one far off: with itself in the mean and spread its z could not pass
    √3 ≈ 1.73; against the other three it is well past 2."""
    rates = {"AAA": 0.003, "BBB": 0.0001, "CCC": 0.0002, "DDD": 0.00015}
    table = funding({c: [("x", 1, r)] for c, r in rates.items()})
    symbols = [f"{c}/USDT" for c in rates]
    z = funding_z(table, pa.array(symbols))
    assert z[0] == pytest.approx(leave_one_out_z(rates, "AAA")) and z[0] > 2.0
    assert (z[1:] < 2.0).all()
    pm = premove(factors(*(pm_row(s, volume=10.0) for s in symbols)), "normal",
                 PremoveConfig(), table)
    assert pm.gates[0].status.tolist() == [PASS, FAIL, FAIL, FAIL]


def test_funding_gate_boundary_and_two_of_three() -> None:
    # binary-exact rates: the others' mean is 0.5 and sample deviation 0.25, AAA's z is 4
    rates = {"AAA": 1.5, "BBB": 0.25, "CCC": 0.5, "DDD": 0.75}
    table = funding({c: [("x", 1, r)] for c, r in rates.items()})
    symbols = [f"{c}/USDT" for c in rates]
    z = (1.5 - (0.25 + 0.5 + 0.75) / 3) / math.sqrt(((0.25 - 0.5) ** 2 + (0.75 - 0.5) ** 2) / 2)
    assert z == 4.0
    # AAA: funding and squeeze pass, accumulation fails
    t = factors(*(pm_row(s, volume=10.0) for s in symbols))
    at = premove(t, "normal", PremoveConfig(funding_z=z), table)
    assert at.gates[0].status[0] == PASS and at.alert[0]
    past = premove(t, "normal", PremoveConfig(funding_z=above(z)), table)
    assert past.gates[0].status[0] == FAIL and not past.alert[0]
    assert past.passed[0] == 1 and past.status[0] == "no alert"


def test_volatile_regime_needs_volume_confirmation() -> None:
    t = factors(pm_row("LOUD"), pm_row("QUIET", volume=below(75.0), depth_usd=1_000.0),
                pm_row("UNKNOWN", volume=None))
    calm = premove(t, "calm", PremoveConfig(needed=1))
    assert calm.alert.tolist() == [True, True, True]  # the squeeze passes for all three
    assert calm.confirmation.tolist() == [PASS] * 3
    volatile = premove(t, "volatile", PremoveConfig(needed=1))
    assert volatile.confirmation.tolist() == [PASS, FAIL, MISSING]
    assert volatile.alert.tolist() == [True, False, False]
    assert volatile.status.tolist() == ["alert", "no alert", "undetermined"]
    assert volatile.gates[-1].name == "volume_confirmation"


def test_evaluate_premove_reports_missing_funding_as_missing() -> None:
    t = factors(pm_row("A/USDT"))
    result = evaluate(t, "premove", "normal", ScansConfig())
    assert result.premove is not None and result.passed.tolist() == [True]
    assert result.reasons[0][-1] == "funding_z: funding_z missing"
