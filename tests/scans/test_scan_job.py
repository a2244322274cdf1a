"""The scan job end to end over the in-process sim: backfill, order-book snapshots,
regime, then hot/warm/premove scans whose artifacts and scan_signals rows are checked
against values computed here with plain Python from the sim's own candles and the stored
order-book rows (returns, RSI, MA distance, VADR, spread, depth, and the weighted score)."""

from __future__ import annotations

import csv
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from candlekeep.config.scans import REGIME_WEIGHTS
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS, SCAN_SIGNALS
from candlekeep.scans.factors import (
    momentum_score,
    quality_score,
    technical_score,
    volume_score,
)
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from tests.jobs.conftest import NOW, make_config
from tests.jobs.test_pipeline import run

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "BNB/USDT", "SOL/USDT"]


def runtime(tmp_path: Path, clock: FakeClock, ex: SimExchange, **scans: object) -> Runtime:
    cfg = make_config(tmp_path, [{"source": "sim", "symbols": SYMBOLS, "timeframes": ["1h"],
                                  "start": NOW - 4 * 24 * H}],
                      universes={"majors": {"source": "sim",
                                            "symbols": [*SYMBOLS, "NONE/USDT"]}},
                      **({"scans": scans} if scans else {}))
    return Runtime(cfg, clock=clock, sources={"sim": SimSource("sim", exchange=ex,
                                                               clock=clock)})


def plain_returns(ex: SimExchange, symbol: str) -> dict[str, float]:
    """1h, 4h and 24h returns of the last closed 1h candle, in plain Python."""
    last = NOW // H * H - H
    t = ex.expected(symbol, "1h", last - 30 * H, last + H, source="sim")
    close = dict(zip(pc.cast(t["ts"], "int64").to_pylist(), t["close"].to_pylist(),
                     strict=True))
    return {f"{h}h": close[last] / close[last - h * H] - 1 for h in (1, 4, 24)}


def plain_inputs(ex: SimExchange, symbol: str) -> dict[str, float]:
    """Over the scan's 3 days of closed 1h candles, in plain Python: Wilder's RSI(14)
    seeded with the mean of the first 14 changes, the distance from the mean close of the
    last 20 bars, VADR (last volume / mean of the 20 bars before it)."""
    last = NOW // H * H - H
    t = ex.expected(symbol, "1h", last + H - 72 * H, last + H, source="sim")
    close, volume = t["close"].to_pylist(), t["volume"].to_pylist()
    changes = [b - a for a, b in pairwise(close)]
    gain = sum(max(c, 0.0) for c in changes[:14]) / 14
    loss = sum(max(-c, 0.0) for c in changes[:14]) / 14
    for c in changes[14:]:
        gain, loss = (gain * 13 + max(c, 0.0)) / 14, (loss * 13 + max(-c, 0.0)) / 14
    rsi = 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)
    return {"rsi": rsi, "ma_distance": close[-1] / (sum(close[-20:]) / 20) - 1,
            "vadr": volume[-1] / (sum(volume[-21:-1]) / 20)}


def plain_scores(rt: Runtime, ex: SimExchange, regime: str = "normal") -> dict[str, dict]:
    """Each symbol's factors and score from the sim's candles and the newest stored book
    row, through the documented 0-100 scalings and the regime's weights."""
    books = rt.store("main").read(ORDERBOOK_SNAPSHOTS).to_pylist()
    w = REGIME_WEIGHTS[regime]
    out = {}
    for symbol in SYMBOLS:
        book = max((b for b in books if b["symbol"] == symbol), key=lambda b: b["ts"])
        r, x = plain_returns(ex, symbol), plain_inputs(ex, symbol)

        def one(f: object, *args: float) -> float:
            return float(f(*(np.array([a]) for a in args))[0])  # type: ignore[operator]

        factors = {
            "momentum": one(momentum_score, r["1h"], r["4h"], r["24h"]),
            "technical": one(technical_score, x["rsi"], x["ma_distance"]),
            "volume": one(volume_score, x["vadr"]),
            "quality": float(quality_score(np.array([book["spread_bps"]]),
                                           np.array([book["depth_quote"]]),
                                           np.array([True]), np.array([True]))[0])}
        out[symbol] = {**factors, "vadr": x["vadr"], "spread_bps": book["spread_bps"],
                       "depth_usd": book["depth_quote"],
                       "score": sum(getattr(w, k) * v for k, v in factors.items())}
    return out


@pytest.fixture
async def scanned(tmp_path: Path) -> tuple[Runtime, SimExchange]:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, {s: "2017-08-17" for s in SYMBOLS}, clock=FakeClock(NOW),
                     holes=None, transient=None)
    rt = runtime(tmp_path, clock, ex, profiles={"custom": {"min_score": 80}})
    assert (await run(rt, "backfill")).ok
    assert (await run(rt, "orderbook", universe="majors")).ok
    return rt, ex


async def test_a_hot_scan_writes_explained_artifacts_that_match_plain_python(
        scanned: tuple[Runtime, SimExchange]) -> None:
    rt, ex = scanned
    try:
        res = await run(rt, "scan", profile="hot", universe="majors")
        assert res.ok, res.errors
        # No regime recorded yet: normal weights, and it says so.
        assert res.details["regime"] == "normal" and res.details["regime_note"]
        assert res.details["not_scored"] == {"NONE/USDT": "no candles; no order book"}
        folder = Path(res.artifacts[0]).parent
        assert folder.parent.parent == rt.config.data_dir / "artifacts" / "scans" / "majors"
        assert folder.parent.name == "hot"
        rows = {r["symbol"]: r for r in csv.DictReader((folder / "signals.csv").open())}
        assert set(rows) == {*SYMBOLS, "NONE/USDT"}  # none dropped silently
        assert rows["NONE/USDT"]["score"] == ""  # not scored, never 0
        explain = json.loads((folder / "explain.json").read_text())
        assert explain["weights"] == {"momentum": 0.35, "technical": 0.25, "volume": 0.25,
                                      "quality": 0.15}
        by_symbol = {s["symbol"]: s for s in explain["symbols"]}
        for symbol, want in plain_scores(rt, ex).items():
            got = rows[symbol]
            assert got["fresh"] == "true", symbol
            for col in ("momentum", "vadr", "spread_bps", "depth_usd", "score"):
                assert float(got[col]) == pytest.approx(want[col], rel=1e-9), (symbol, col)
            for name in ("technical", "volume", "quality"):
                assert by_symbol[symbol]["factors"][name] == pytest.approx(
                    want[name], rel=1e-9), (symbol, name)
        stored = rt.store("main").read(SCAN_SIGNALS, where={"profile": "hot"})
        assert sorted(stored["symbol"].to_pylist()) == sorted(rows)
        passed = {s for s, r in rows.items() if r["passed"] == "true"}
        assert {p["symbol"] for p in res.details["passed"]} == passed
        for symbol, r in rows.items():  # a pass means every gate passed, with its values
            gates = by_symbol[symbol]["gates"]
            assert (symbol in passed) == all(g["status"] == "pass" for g in gates)
            if symbol in passed:
                assert float(r["score"]) >= 75 and float(r["spread_bps"]) <= 50
    finally:
        await rt.aclose()


async def test_a_custom_profile_passes_exactly_the_symbols_at_or_above_its_gate(
        scanned: tuple[Runtime, SimExchange]) -> None:
    rt, ex = scanned
    try:
        res = await run(rt, "scan", profile="custom", universe="majors")
        assert res.ok, res.errors
        rows = list(csv.DictReader((Path(res.artifacts[0]).parent / "signals.csv").open()))
        scores = {s: p["score"] for s, p in plain_scores(rt, ex).items()}
        assert all(abs(v - 80) > 1e-6 for v in scores.values())  # no tie at the gate
        want = sorted(s for s, v in scores.items() if v >= 80)
        assert want and len(want) < len(SYMBOLS)  # both paths are exercised
        assert sorted(p["symbol"] for p in res.details["passed"]) == want
        assert sorted(r["symbol"] for r in rows if r["passed"] == "true") == want
    finally:
        await rt.aclose()


async def test_the_regimes_weights_are_used_and_premove_reports_missing_funding(
        scanned: tuple[Runtime, SimExchange]) -> None:
    rt, _ = scanned
    try:
        assert (await run(rt, "regime", universe="majors")).ok
        res = await run(rt, "scan", profile="warm", universe="majors")
        assert res.ok and res.details["regime_note"] is None
        regime = res.details["regime"]
        explain = json.loads((Path(res.artifacts[0]).parent / "explain.json").read_text())
        from candlekeep.config.scans import REGIME_WEIGHTS

        assert explain["weights"] == REGIME_WEIGHTS[regime].model_dump()
        res = await run(rt, "scan", profile="premove", universe="majors")
        assert res.ok, res.errors
        folder = Path(res.artifacts[0]).parent
        premove = list(csv.DictReader((folder / "premove.csv").open()))
        assert premove and all(r["funding_z"] == "" for r in premove)  # missing, not 0
    finally:
        await rt.aclose()


async def test_a_failed_artifact_write_fails_the_run_naming_the_path(
        scanned: tuple[Runtime, SimExchange], tmp_path: Path) -> None:
    rt, _ = scanned
    try:
        blocker = tmp_path / "data" / "artifacts"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("a file where the artifacts folder goes")
        res = await run(rt, "scan", profile="hot", universe="majors")
        assert not res.ok and str(blocker) in res.errors[0]
        assert rt.store("main").read(SCAN_SIGNALS).num_rows == 0  # nothing recorded
        assert not list(blocker.parent.glob(".*tmp*"))
    finally:
        await rt.aclose()


async def test_a_stale_regime_is_used_and_said_so(scanned: tuple[Runtime, SimExchange],
                                                  tmp_path: Path) -> None:
    rt, _ = scanned
    try:
        assert (await run(rt, "regime", universe="majors")).ok
        clock = rt.clock
        assert isinstance(clock, FakeClock)
        clock.set(NOW + 8 * H)  # next refresh (4 h) plus one period: not yet stale
        res = await run(rt, "scan", profile="warm", universe="majors")
        assert res.details["regime_note"] is None
        clock.set(NOW + 8 * H + 60_000)
        res = await run(rt, "scan", profile="warm", universe="majors")
        note = res.details["regime_note"]
        assert note and note.startswith("regime of 20") and "is stale (next refresh was due at" \
            in note and note in res.warnings
        regime = res.details["regime"]
        explain = json.loads((Path(res.artifacts[0]).parent / "explain.json").read_text())
        assert explain["weights"] == REGIME_WEIGHTS[regime].model_dump()  # still used
    finally:
        await rt.aclose()


async def test_a_lookback_too_short_for_the_factors_is_a_config_error(
        scanned: tuple[Runtime, SimExchange]) -> None:
    rt, _ = scanned
    try:
        res = await run(rt, "scan", profile="warm", universe="majors", lookback="1d")
        assert not res.ok
        assert "params.lookback" in res.errors[0] and "at least 39" in res.errors[0]
        assert "give at least 39h" in res.errors[0]
        assert (await run(rt, "scan", profile="warm", universe="majors",
                          lookback="39h")).ok
    finally:
        await rt.aclose()
