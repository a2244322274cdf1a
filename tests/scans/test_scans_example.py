"""examples/scans.yaml runs on the in-process sim: its jobs validate, and backfill →
order books → regime → hot, warm and premove scans produce the artifacts the example
promises, with the stablecoin left out of the universe and the regime's weights used."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from candlekeep.config import parse_config
from candlekeep.config.scans import REGIME_WEIGHTS
from candlekeep.core.clock import FakeClock
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.validate import load_jobs
from tests.jobs.test_pipeline import run

EXAMPLE = Path(__file__).parents[2] / "examples" / "scans.yaml"
NOW = to_ms("2026-11-15T12:34:56Z")


async def test_the_scans_example_runs_end_to_end_on_the_sim(tmp_path: Path) -> None:
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(tmp_path / "scans.yaml"),
                       tmp_path)
    assert {j.name for j in load_jobs(cfg)} == {"ingest", "books", "scan.hot", "scan.warm",
                                                 "regime", "premove", "providers"}
    rt = Runtime(cfg, clock=FakeClock(NOW, autoadvance=True))
    try:
        assert (await run(rt, "backfill")).ok
        books = await run(rt, "orderbook", universe="top")
        assert books.ok and books.details["snapshots"] == 6
        regime = await run(rt, "regime", universe="top")
        assert regime.ok, regime.errors
        assert regime.details["excluded"]["USDC/USDT"] == "stablecoin"
        verdict = regime.details["regime"]
        artifacts = tmp_path / "data" / "artifacts"
        assert json.loads((artifacts / "regime" / "top" / "latest.json").read_text())["regime"] \
            == verdict
        for profile in ("hot", "warm", "premove"):
            res = await run(rt, "scan", profile=profile, universe="top")
            assert res.ok, (profile, res.errors)
            assert res.details["regime"] == verdict and res.details["symbols"] == 6
            folder = Path(res.artifacts[0]).parent
            assert folder.parent == artifacts / "scans" / "top" / profile
            explain = json.loads((folder / "explain.json").read_text())
            assert explain["weights"] == REGIME_WEIGHTS[verdict].model_dump()
            rows = list(csv.DictReader((folder / "signals.csv").open()))
            assert "USDC/USDT" not in {r["symbol"] for r in rows} and len(rows) == 6
        premove = list(csv.DictReader((folder / "premove.csv").open()))
        assert all(r["funding_z"] == "" for r in premove)  # no funding stored: missing
    finally:
        await rt.aclose()
