"""The scan job end to end over the in-process sim: backfill, order-book snapshots,
regime, then hot/warm/premove scans whose artifacts and scan_signals rows are checked
against values computed here with plain Python from the sim's own candles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.datasets import SCAN_SIGNALS
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
    from candlekeep.scans.factors import momentum_score

    rt, ex = scanned
    try:
        res = await run(rt, "scan", profile="hot", universe="majors")
        assert res.ok, res.errors
        # No regime recorded yet: normal weights, and it says so.
        assert res.details["regime"] == "normal" and res.details["regime_note"]
        assert res.details["not_scored"] == {"NONE/USDT": "no candles; no order book"}
        folder = Path(res.artifacts[0]).parent
        assert folder.parent.name == "hot" and folder.parent.parent.name == "scans"
        rows = {r["symbol"]: r for r in csv.DictReader((folder / "signals.csv").open())}
        assert set(rows) == {*SYMBOLS, "NONE/USDT"}  # none dropped silently
        assert rows["NONE/USDT"]["score"] == ""  # not scored, never 0
        explain = json.loads((folder / "explain.json").read_text())
        assert explain["weights"] == {"momentum": 0.35, "technical": 0.25, "volume": 0.25,
                                      "quality": 0.15}
        import numpy as np

        for symbol in SYMBOLS:
            r = plain_returns(ex, symbol)
            want = momentum_score(np.array([r["1h"]]), np.array([r["4h"]]),
                                  np.array([r["24h"]]))[0]
            assert abs(float(rows[symbol]["momentum"]) - want) < 1e-6, symbol
        stored = rt.store("main").read(SCAN_SIGNALS, where={"profile": "hot"})
        assert sorted(stored["symbol"].to_pylist()) == sorted(rows)
        passed = {s for s, r in rows.items() if r["passed"] == "true"}
        assert {p["symbol"] for p in res.details["passed"]} == passed
        by_symbol = {s["symbol"]: s for s in explain["symbols"]}
        for symbol, r in rows.items():  # a pass means every gate passed, with its values
            gates = by_symbol[symbol]["gates"]
            assert (symbol in passed) == all(g["status"] == "pass" for g in gates)
            if symbol in passed:
                assert float(r["score"]) >= 75 and float(r["spread_bps"]) <= 50
    finally:
        await rt.aclose()


async def test_a_custom_profile_passes_exactly_the_symbols_at_or_above_its_gate(
        scanned: tuple[Runtime, SimExchange]) -> None:
    rt, _ = scanned
    try:
        res = await run(rt, "scan", profile="custom", universe="majors")
        assert res.ok, res.errors
        rows = list(csv.DictReader((Path(res.artifacts[0]).parent / "signals.csv").open()))
        want = sorted(r["symbol"] for r in rows if r["score"] and float(r["score"]) >= 80)
        assert want  # the sim's data has one: the pass path is exercised
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
    finally:
        await rt.aclose()
