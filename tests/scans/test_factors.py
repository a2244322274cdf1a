"""Factors against values computed here with plain loops on small synthetic candles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest

from candlekeep.core.schema import TS_TYPE, candles_from_columns
from candlekeep.core.timeframes import HOUR_MS, MINUTE_MS
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
from candlekeep.scans.factors import (
    FACTORS_SCHEMA,
    compute_factors,
    momentum_score,
    quality_score,
    technical_score,
    volume_score,
)

T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS


def series(symbol: str, closes: list[float], volumes: list[float], *,
           hours: list[int] | None = None, source: str = "sim") -> pa.Table:
    at = hours if hours is not None else list(range(len(closes)))
    return candles_from_columns(source, symbol, "1h", [T0 + h * HOUR_MS for h in at],
                                closes, closes, closes, closes, volumes, 0)


def rsi_loop(closes: list[float], n: int = 14) -> float:
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gain = sum(max(c, 0.0) for c in changes[:n]) / n
    loss = sum(max(-c, 0.0) for c in changes[:n]) / n
    for c in changes[n:]:
        gain = (gain * (n - 1) + max(c, 0.0)) / n
        loss = (loss * (n - 1) + max(-c, 0.0)) / n
    return 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)


def ret_loop(hours: list[int], closes: list[float], horizon_h: int) -> float | None:
    """The return over the bar exactly ``horizon_h`` hours before the last (None without)."""
    target = hours[-1] - horizon_h
    base = None
    for h, c in zip(hours, closes, strict=True):
        if h == target:
            base = c
    return None if base is None else closes[-1] / base - 1.0


def walk(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    closes = (100 + rng.standard_normal(n).cumsum()).tolist()
    volumes = (rng.random(n) * 1000 + 1).tolist()
    return closes, volumes


def book(symbol: str, ts_ms: int, spread: float, depth: float,
         source: str = "sim") -> dict[str, object]:
    return {"source": source, "symbol": symbol, "ts": ts_ms, "bid": 1.0, "ask": 1.0,
            "mid": 1.0, "spread_bps": spread, "bid_depth_quote": depth,
            "ask_depth_quote": depth, "depth_quote": depth, "bid_levels": 5,
            "ask_levels": 5, "ingested_at": ts_ms}


def books(*rows: dict[str, object]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=ORDERBOOK_SNAPSHOTS.schema)


def test_raw_inputs_match_plain_loops() -> None:
    """Three symbols of different lengths, one with gaps (returns go by time, not bars)."""
    specs = {"AAA/USDT": (60, 1, None), "BBB/USDT": (35, 2, None),
             "CCC/USDT": (50, 3, [h if h < 30 else h + 3 for h in range(50)])}
    tables, expected = [], {}
    for symbol, (n, seed, gaps) in specs.items():
        closes, volumes = walk(n, seed)
        hours = gaps if gaps is not None else list(range(n))
        tables.append(series(symbol, closes, volumes, hours=hours))
        expected[symbol] = {
            "ret_1h": ret_loop(hours, closes, 1), "ret_4h": ret_loop(hours, closes, 4),
            "ret_24h": ret_loop(hours, closes, 24), "rsi": rsi_loop(closes),
            "ma_distance": closes[-1] / (sum(closes[-20:]) / 20) - 1,
            "vadr": volumes[-1] / (sum(volumes[-21:-1]) / 20), "bars": n,
            "close": closes[-1]}
    got = compute_factors(pa.concat_tables(tables), T0 + 60 * HOUR_MS)
    assert got.schema == FACTORS_SCHEMA
    assert got["symbol"].to_pylist() == list(specs)
    for row in got.to_pylist():
        want = expected[row["symbol"]]
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (row["symbol"], name)


def test_factors_are_the_documented_mappings_of_the_raw_inputs() -> None:
    closes, volumes = walk(40, 7)
    t = series("AAA/USDT", closes, volumes)
    now = T0 + 40 * HOUR_MS
    row = compute_factors(t, now, books=books(book("AAA/USDT", now, 10.0, 200_000))
                          ).to_pylist()[0]
    r = [row["ret_1h"], row["ret_4h"], row["ret_24h"]]
    weighted = 0.2 * r[0] + 0.3 * r[1] / 2 + 0.5 * r[2] / math.sqrt(24)
    assert row["momentum"] == pytest.approx(min(max(50 + 50 * weighted / 0.01, 0), 100))
    ma = min(max(50 + 50 * row["ma_distance"] / 0.05, 0), 100)
    assert row["technical"] == pytest.approx(0.5 * row["rsi"] + 0.5 * ma)
    v = row["vadr"]
    assert row["volume"] == pytest.approx(50 * v if v <= 1 else min(50 + 25 * (v - 1), 100))
    depth = 100 * (math.log10(200_000) - 4) / 2
    assert row["quality"] == pytest.approx(0.4 * 90 + 0.4 * depth + 0.2 * 100)
    assert row["fresh"] and row["venue"] == "sim" and row["reason"] is None


def test_scalings_at_their_anchors() -> None:
    assert volume_score(np.array([0.0, 0.5, 1.0, 1.8, 2.0, 3.0, 9.0])).tolist() == \
        pytest.approx([0, 25, 50, 70, 75, 100, 100])
    assert momentum_score(np.array([0.0]), np.array([0.0]), np.array([0.0]))[0] == 50
    assert momentum_score(np.array([1.0]), np.array([1.0]), np.array([1.0]))[0] == 100
    assert technical_score(np.array([70.0]), np.array([0.0]))[0] == 60
    stale = quality_score(np.array([0.0]), np.array([1e6]), np.array([False]),
                          np.array([True]))[0]
    assert stale == pytest.approx(0.4 * 100 + 0.4 * 100 + 0.2 * 50)


def test_vadr_is_not_computed_under_20_bars_before_the_last() -> None:
    closes, volumes = walk(21, 4)
    short = series("SHORT/USDT", closes[:20], volumes[:20])
    enough = series("ENOUGH/USDT", closes, volumes)
    got = {r["symbol"]: r for r in compute_factors(
        pa.concat_tables([enough, short]), T0 + 21 * HOUR_MS).to_pylist()}
    assert got["SHORT/USDT"]["vadr"] is None and got["SHORT/USDT"]["volume"] is None
    assert got["SHORT/USDT"]["vadr_note"] == "fewer than 20 bars before the last"
    assert "VADR not computed: fewer than 20 bars before the last" in \
        got["SHORT/USDT"]["reason"]
    assert got["ENOUGH/USDT"]["vadr"] == pytest.approx(volumes[-1] / (sum(volumes[:20]) / 20))
    assert got["ENOUGH/USDT"]["vadr_note"] is None


def test_no_volume_before_the_last_is_marked_not_infinite() -> None:
    closes, _ = walk(30, 5)
    got = compute_factors(series("Z/USDT", closes, [0.0] * 29 + [5.0]),
                          T0 + 30 * HOUR_MS).to_pylist()[0]
    assert got["vadr"] is None and got["vadr_note"] == "no volume in the 20 bars before the last"


def test_symbols_without_candles_or_book_are_listed_with_reasons_not_zero() -> None:
    closes, volumes = walk(30, 6)
    now = T0 + 30 * HOUR_MS
    got = compute_factors(series("HAS/USDT", closes, volumes), now,
                          symbols=["NONE/USDT", "HAS/USDT", "BOOKONLY/USDT"],
                          books=books(book("BOOKONLY/USDT", now, 5.0, 1e6)))
    rows = {r["symbol"]: r for r in got.to_pylist()}
    assert got["symbol"].to_pylist() == ["NONE/USDT", "HAS/USDT", "BOOKONLY/USDT"]
    assert rows["NONE/USDT"]["reason"] == "no candles; no order book"
    assert rows["NONE/USDT"]["bars"] == 0
    assert all(rows["NONE/USDT"][f] is None for f in ("momentum", "technical", "volume",
                                                    "quality"))
    assert rows["HAS/USDT"]["reason"] == "no order book"
    assert rows["HAS/USDT"]["quality"] is None and rows["HAS/USDT"]["momentum"] is not None
    assert rows["BOOKONLY/USDT"]["reason"] == "no candles"
    assert rows["BOOKONLY/USDT"]["spread_bps"] == 5.0


def test_latest_book_is_used_and_staleness_counts() -> None:
    closes, volumes = walk(30, 8)
    now = T0 + 30 * HOUR_MS
    got = compute_factors(series("A/USDT", closes, volumes), now, books=books(
        book("A/USDT", now - 2 * HOUR_MS, 40.0, 50_000),
        book("A/USDT", now - HOUR_MS, 20.0, 150_000))).to_pylist()[0]
    assert (got["spread_bps"], got["depth_usd"]) == (20.0, 150_000)
    assert got["book_ts"] == pa.scalar(now - HOUR_MS, pa.int64()).cast(TS_TYPE).as_py()
    assert got["fresh_candles"] and not got["fresh_book"] and not got["fresh"]
    fresh = compute_factors(series("A/USDT", closes, volumes), now, books=books(
        book("A/USDT", now - 29 * MINUTE_MS, 20.0, 150_000))).to_pylist()[0]
    assert fresh["quality"] - got["quality"] == pytest.approx(0.2 * 50)


def test_unsorted_input_gives_the_same_rows() -> None:
    parts = [series(s, *walk(30, i)) for i, s in enumerate(("B/USDT", "A/USDT"))]
    ordered = compute_factors(pa.concat_tables(parts[::-1]), T0 + 30 * HOUR_MS,
                              symbols=["B/USDT", "A/USDT"])
    table = pa.concat_tables(parts)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    got = compute_factors(shuffled, T0 + 30 * HOUR_MS, symbols=["B/USDT", "A/USDT"])
    assert got.equals(ordered)


def test_duplicate_rows_and_coarse_timeframes_are_refused() -> None:
    t = series("A/USDT", *walk(30, 1))
    with pytest.raises(ValueError, match="repeat"):
        compute_factors(pa.concat_tables([t, t]), T0)
    coarse = candles_from_columns("sim", "A/USDT", "4h", [T0], [1.0], [1.0], [1.0], [1.0],
                                  [1.0], 0)
    with pytest.raises(ValueError, match="1h or finer"):
        compute_factors(coarse, T0)


def test_a_gap_at_a_horizon_leaves_that_return_missing_not_longer() -> None:
    """The bar 1h before the newest is missing: ret_1h is not the 2h move, it is missing,
    and so are momentum and the score, with the reason."""
    hours = [h for h in range(40) if h != 38]
    closes, volumes = walk(len(hours), 9)
    got = compute_factors(series("G/USDT", closes, volumes, hours=hours),
                          T0 + 40 * HOUR_MS).to_pylist()[0]
    assert got["ret_1h"] is None and got["momentum"] is None
    assert got["ret_4h"] == pytest.approx(ret_loop(hours, closes, 4))
    assert got["reason"] == "no candle 1h before the newest (a gap) for momentum; no order book"


def test_stale_candles_are_not_scored_at_two_bars() -> None:
    closes, volumes = walk(30, 10)
    last = T0 + 29 * HOUR_MS
    t = series("S/USDT", closes, volumes)
    now = last + 2 * HOUR_MS  # the newest bar opened exactly two bars ago: still fresh
    ok = compute_factors(t, now, books=books(book("S/USDT", now, 10.0, 2e5))).to_pylist()[0]
    assert ok["fresh_candles"] and ok["reason"] is None and ok["momentum"] is not None
    late = compute_factors(t, now + 1, books=books(book("S/USDT", now, 10.0, 2e5))
                           ).to_pylist()[0]
    assert not late["fresh_candles"]
    assert late["reason"] == "newest candle at 2023-11-16 03:00 UTC: stale"
    assert all(late[f] is None for f in ("momentum", "technical", "volume", "quality"))
    assert late["ret_1h"] == ok["ret_1h"] and late["close"] == closes[-1]  # inputs kept


def test_a_stale_book_is_kept_but_marked_at_the_limit() -> None:
    closes, volumes = walk(30, 11)
    now = T0 + 30 * HOUR_MS
    t = series("B/USDT", closes, volumes)
    at = compute_factors(t, now, books=books(book("B/USDT", now - 30 * MINUTE_MS, 20.0,
                                                  1e5))).to_pylist()[0]
    past = compute_factors(t, now + 1, books=books(book("B/USDT", now - 30 * MINUTE_MS, 20.0,
                                                        1e5))).to_pylist()[0]
    assert at["fresh_book"] and not past["fresh_book"] and not past["fresh"]
    assert (past["spread_bps"], past["depth_usd"]) == (20.0, 1e5)  # the record stays
    assert past["reason"] is None  # scored, quality without its book freshness share
    assert at["quality"] - past["quality"] == pytest.approx(0.2 * 50)


def test_depth_in_a_foreign_quote_is_not_taken_as_usd() -> None:
    closes, volumes = walk(30, 12)
    now = T0 + 30 * HOUR_MS
    t = pa.concat_tables([series("ETH/BTC", closes, volumes),
                          series("ETH/USDC:USDC", closes, volumes)])
    got = {r["symbol"]: r for r in compute_factors(t, now, books=books(
        book("ETH/BTC", now, 10.0, 50.0), book("ETH/USDC:USDC", now, 10.0, 2e5))).to_pylist()}
    assert got["ETH/BTC"]["depth_usd"] is None and got["ETH/BTC"]["quality"] is None
    assert got["ETH/BTC"]["reason"] == ("quote currency BTC is not USD (depth_usd not "
                                        "computed)")
    assert got["ETH/USDC:USDC"]["depth_usd"] == 2e5 and got["ETH/USDC:USDC"]["reason"] is None
