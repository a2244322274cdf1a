"""The regime's indicators, votes and verdict on small candle tables, against values
computed here with plain Python (statistics, math) from the same closes."""

from __future__ import annotations

import itertools
import math
import statistics

import pyarrow as pa
import pytest

from candlekeep.config.scans import REGIME_WEIGHTS, RegimeConfig, Votes
from candlekeep.core.schema import candles_from_columns
from candlekeep.core.timeframes import DAY_MS, parse_timeframe
from candlekeep.scans.regime import compute_regime, decide, vote_high_calm, vote_low_calm

D1 = parse_timeframe("1d")
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
NOW = T0 + 20 * DAY_MS + 3_600_000  # the 20th daily candle (T0 + 19 d) has closed
AS_OF = "2026-01-20T00:00:00.000Z"
BTC = "BTC/USDT"
CFG = RegimeConfig()


def table(closes: dict[str, list[float | None]], end: int = T0 + 20 * DAY_MS) -> pa.Table:
    """Daily candles whose last one opens a day before ``end``; None: no candle."""
    parts = []
    for sym, cs in closes.items():
        start = end - len(cs) * DAY_MS
        keep = [(start + i * DAY_MS, c) for i, c in enumerate(cs) if c is not None]
        ts = [t for t, _ in keep]
        c = [float(v) for _, v in keep]
        parts.append(candles_from_columns("sim", sym, "1d", ts, c, c, c, c, [1.0] * len(c), 0))
    return pa.concat_tables(parts)


def hand_volatility(closes: list[float]) -> float:
    window = closes[-8:]  # 7 days of daily returns
    returns = [math.log(b / a) for a, b in itertools.pairwise(window)]
    return statistics.stdev(returns) * math.sqrt(365)


BTC_CLOSES = [100.0 + (i % 3) * 0.5 for i in range(12)] + [
    100.0, 103.0, 99.0, 104.0, 98.0, 105.0, 97.0, 106.0]


def test_indicators_match_plain_python() -> None:
    a = [float(i) for i in range(1, 21)]                    # rising: above MA, advancing
    b = [10.0] * 19 + [9.0]                                  # below MA, declining
    c = [float(i) for i in range(1, 20)] + [15.0]           # above MA, declining
    d = [5.0] * 18 + [4.0, 6.0]                              # above MA, advancing
    e = [20.0 - i for i in range(20)]                        # falling
    closes = {"A": a, "B": b, "C": c, "D": d, "E": e, BTC: BTC_CLOSES}
    r = compute_regime(table(closes), "u", ["A", "B", "C", "D", "E"], BTC, D1, CFG, NOW)
    assert r is not None
    above = [cs[-1] > sum(cs[-20:]) / 20 for cs in (a, b, c, d, e)]
    advancing = [cs[-1] > cs[-2] for cs in (a, b, c, d, e)]
    assert r.above_ma.value == pytest.approx(sum(above) / 5) == 0.6
    assert r.breadth.value == pytest.approx(sum(advancing) / 5) == 0.4
    vol = hand_volatility(BTC_CLOSES)
    assert r.volatility.value == pytest.approx(vol, rel=1e-12)
    assert vol > 0.45  # the swings above make BTC volatile
    assert (r.volatility.vote, r.above_ma.vote, r.breadth.vote) == (
        "volatile", "normal", "normal")
    assert (r.regime, r.confidence) == ("normal", pytest.approx(2 / 3))
    assert r.weights == REGIME_WEIGHTS["normal"]
    assert r.as_of == T0 + 19 * DAY_MS and r.ts == NOW
    assert r.next_refresh == NOW + 4 * 3_600_000
    assert r.above_ma.counted == r.breadth.counted == 5 and r.excluded == {}


def test_three_way_tie_is_normal_with_a_third() -> None:
    calm_btc = [100.0 + (i % 2) * 0.1 for i in range(20)]   # ~2 % a year: calm
    closes = {"A": [float(i) for i in range(1, 20)] + [15.0],  # above MA, declining
              "B": [10.0] * 19 + [9.0],                        # below MA, declining
              BTC: calm_btc}
    r = compute_regime(table(closes), "u", ["A", "B"], BTC, D1, CFG, NOW)
    assert r is not None
    assert hand_volatility(calm_btc) < 0.25
    assert (r.volatility.vote, r.above_ma.vote, r.breadth.vote) == ("calm", "normal", "volatile")
    assert r.above_ma.value == 0.5 and r.breadth.value == 0.0
    assert (r.regime, r.confidence) == ("normal", pytest.approx(1 / 3))


def test_missing_btc_leaves_two_votes() -> None:
    rising = {"A": [float(i) for i in range(1, 21)], "B": [float(i) for i in range(2, 22)]}
    r = compute_regime(table(rising), "u", ["A", "B"], BTC, D1, CFG, NOW)
    assert r is not None
    assert r.volatility.value is None and r.volatility.vote is None
    assert r.volatility.reason == f"{BTC}: 0 of 8 1d closes in the 7 days to {AS_OF}"
    assert (r.regime, r.confidence) == ("calm", pytest.approx(2 / 3))  # two calm votes of 3
    falling = {"A": [float(i) for i in range(1, 21)], "B": [30.0 - i for i in range(20)],
               "C": [30.0 - i for i in range(20)]}
    r = compute_regime(table(falling), "u", ["A", "B", "C"], BTC, D1,
                       RegimeConfig(above_ma=Votes(calm=0.3, volatile=0.1)), NOW)
    assert r is not None
    assert (r.above_ma.vote, r.breadth.vote) == ("calm", "normal")  # 1/3 each
    assert (r.regime, r.confidence) == ("normal", pytest.approx(1 / 3))  # tie of two


def test_two_missing_votes_disagreeing_give_normal_with_no_support() -> None:
    assert decide([None, "calm", "volatile"]) == ("normal", 0.0)
    assert decide([None, None, "volatile"]) == ("volatile", pytest.approx(1 / 3))
    assert decide([None, None, None]) is None
    assert decide(["calm", "calm", "calm"]) == ("calm", 1.0)


def test_gappy_btc_and_symbols_are_listed_with_reasons() -> None:
    btc = list(BTC_CLOSES)
    btc[-3] = None  # type: ignore[call-overload]
    gap_ma = [5.0] * 20
    gap_ma[2] = None  # type: ignore[call-overload]
    closes = {"A": [float(i) for i in range(1, 21)], "G": gap_ma,
              "S": [5.0] * 19 + [None], BTC: btc}
    r = compute_regime(table(closes), "u", ["A", "G", "S", "N"], BTC, D1, CFG, NOW,
                       {"USDC/USDT": "stablecoin"})
    assert r is not None
    assert r.volatility.value is None and "7 of 8 1d closes" in (r.volatility.reason or "")
    assert r.above_ma.counted == 1 and r.above_ma.value is None  # A only: 1 of 4 is too few
    assert r.above_ma.vote is None
    assert r.above_ma.reason == "1 of 4 members have the closes it needs, fewer than half"
    assert r.breadth.counted == 2 and r.breadth.value == 0.5  # A (up), G (flat): half votes
    assert (r.regime, r.confidence) == ("normal", pytest.approx(1 / 3))
    assert set(r.excluded) == {"G", "S", "N", "USDC/USDT"}
    assert "fewer than 20 1d closes" in r.excluded["G"]
    assert r.excluded["S"] == (
        f"behind: newest 1d close opens 2026-01-19T00:00:00.000Z, before {AS_OF}")
    assert r.excluded["N"].startswith("no 1d candles in the window")
    assert r.excluded["USDC/USDT"] == "stablecoin"


def test_an_in_progress_candle_is_not_read() -> None:
    closes = {"A": [float(i) for i in range(1, 22)], BTC: [*BTC_CLOSES, 500.0]}
    r = compute_regime(table(closes, end=T0 + 21 * DAY_MS), "u", ["A"], BTC, D1, CFG, NOW)
    assert r is not None and r.as_of == T0 + 19 * DAY_MS
    assert r.volatility.value == pytest.approx(hand_volatility(BTC_CLOSES), rel=1e-12)


def test_nothing_stored_is_no_verdict() -> None:
    assert compute_regime(table({"X": [1.0]}), "u", ["A"], BTC, D1, CFG, NOW) is None


# The votes are strict: exactly at a threshold is normal, one ulp beyond votes it.
@pytest.mark.parametrize(("value", "vote"), [
    (0.25, "normal"), (math.nextafter(0.25, 0), "calm"),
    (0.45, "normal"), (math.nextafter(0.45, 1), "volatile")])
def test_volatility_vote_boundaries(value: float, vote: str) -> None:
    assert vote_low_calm(value, CFG.volatility) == vote


@pytest.mark.parametrize(("votes", "value", "vote"), [
    (CFG.above_ma, 0.70, "normal"), (CFG.above_ma, math.nextafter(0.70, 1), "calm"),
    (CFG.above_ma, 0.45, "normal"), (CFG.above_ma, math.nextafter(0.45, 0), "volatile"),
    (CFG.breadth, 0.60, "normal"), (CFG.breadth, math.nextafter(0.60, 1), "calm"),
    (CFG.breadth, 0.30, "normal"), (CFG.breadth, math.nextafter(0.30, 0), "volatile")])
def test_share_vote_boundaries(votes: Votes, value: float, vote: str) -> None:
    assert vote_high_calm(value, votes) == vote


def test_a_share_exactly_at_its_threshold_votes_normal() -> None:
    ups = {f"S{i}": [float(j) for j in range(1, 21)] for i in range(7)}
    downs = {f"T{i}": [20.0 - j for j in range(20)] for i in range(3)}
    r = compute_regime(table(ups | downs), "u", [*ups, *downs], BTC, D1, CFG, NOW)
    assert r is not None
    assert r.above_ma.value == 0.7 and r.above_ma.vote == "normal"  # at calm's 0.70
    assert r.breadth.value == 0.7 and r.breadth.vote == "calm"  # beyond calm's 0.60


def candle(sym: str, ts: int, close: float) -> pa.Table:
    return candles_from_columns("sim", sym, "1d", [ts], [close], [close], [close], [close],
                                [1.0], 0)


def test_one_symbol_a_bar_ahead_does_not_move_the_verdict() -> None:
    """Ingest part-way through: one symbol (a member, or BTC) already has the next candle.
    The regime stays the one of the aligned store, as of the candle all others have."""
    closes = {"A": [float(i) for i in range(1, 21)], "B": [10.0] * 19 + [9.0],
              "C": [5.0] * 18 + [4.0, 6.0], BTC: BTC_CLOSES}
    later = NOW + DAY_MS  # the next daily candle (T0 + 20 d) has closed too
    aligned = compute_regime(table(closes), "u", ["A", "B", "C"], BTC, D1, CFG, later)
    assert aligned is not None and aligned.as_of == T0 + 19 * DAY_MS
    assert aligned.excluded == {} and aligned.volatility.vote == "volatile"
    for ahead in ("A", BTC):
        skewed = pa.concat_tables([table(closes), candle(ahead, T0 + 20 * DAY_MS, 1e6)])
        r = compute_regime(skewed, "u", ["A", "B", "C"], BTC, D1, CFG, later)
        assert r is not None
        assert r.as_of == aligned.as_of and r.excluded == {}
        assert r.indicators == aligned.indicators
        assert (r.regime, r.confidence) == (aligned.regime, aligned.confidence)


def test_a_universe_mostly_behind_or_missing() -> None:
    """Most members a bar behind: the regime is as of their candle, the ones ahead read up
    to it. Most members far behind or never stored: they are left out with reasons and
    the shares, counting fewer than half the universe, do not vote."""
    rising = [float(i) for i in range(1, 22)]
    behind = table({m: rising[:20] for m in ("C", "D", "E")} | {BTC: BTC_CLOSES})
    ahead = table({m: rising for m in ("A", "B")}, end=T0 + 21 * DAY_MS)
    later = NOW + DAY_MS
    r = compute_regime(pa.concat_tables([behind, ahead]), "u", ["A", "B", "C", "D", "E"],
                       BTC, D1, CFG, later)
    assert r is not None and r.as_of == T0 + 19 * DAY_MS and r.excluded == {}
    assert r.above_ma.counted == r.breadth.counted == 5
    assert r.above_ma.value == r.breadth.value == 1.0  # A and B read at as_of (20.0, not 21)

    gappy = table({"A": rising[:20], "B": [*rising[:19], None],  # B: a hole at as_of
                   BTC: BTC_CLOSES})
    c_behind = table({"C": rising[:17]}, end=T0 + 17 * DAY_MS)  # newest opens T0 + 16 d
    b_ahead = candle("B", T0 + 20 * DAY_MS, 30.0)
    r = compute_regime(pa.concat_tables([gappy, c_behind, b_ahead]), "u",
                       ["A", "B", "C", "D", "E"],
                       BTC, D1, CFG, later)
    assert r is not None and r.as_of == T0 + 19 * DAY_MS
    assert r.excluded == {
        "B": f"no 1d close at {AS_OF}",
        "C": f"behind: newest 1d close opens 2026-01-17T00:00:00.000Z, before {AS_OF}",
        "D": f"no 1d candles in the window to {AS_OF}",
        "E": f"no 1d candles in the window to {AS_OF}"}
    for share in (r.above_ma, r.breadth):
        assert share.counted == 1 and share.value is None and share.vote is None
        assert share.reason == "1 of 5 members have the closes it needs, fewer than half"
    assert (r.regime, r.confidence) == ("volatile", pytest.approx(1 / 3))  # BTC alone
