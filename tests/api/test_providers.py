"""Providers health through the real read paths: ``candlekeep providers --probe`` shows a
check without recording it, a provider recorded down shows in ``providers --json`` (equal
to ``GET /providers``), in the ``list`` banner and in ``/system/health`` (degraded, not
503)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.health import Counters, ProviderStatus, provider_health
from candlekeep.sources.sim_source import SimSource
from candlekeep.state.db import StateDB
from candlekeep.state.provider_health import record
from tests.api.serving import cli, market_config, now_ms, serving

pytestmark = pytest.mark.slow


def cli_json(cfg: Path, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
    return json.loads(cli(cfg, *args, "--json", ok=ok))


async def _record_down(cfg: Path) -> None:
    """What a daemon's providers_health check records once the exchange answers 503s:
    a real SimSource's circuit opened by five of them."""
    clock = FakeClock(now_ms(), autoadvance=True)
    ex = SimExchange(3, clock=clock)
    src = SimSource("sim", exchange=ex, clock=clock, max_attempts=1)
    ex.force("503", 5)
    for _ in range(5):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", clock.now_ms() - 3_600_000,
                                    clock.now_ms())
    found = provider_health(src, "sim", Counters(), clock.now_ms())
    assert found.status is ProviderStatus.DOWN
    db = StateDB(f"sqlite:///{cfg.parent / 'data' / 'state.db'}")
    try:
        record(db.engine, [found], "node-a", 0)
    finally:
        db.dispose()


async def test_providers_cli_api_banner_and_health(tmp_path: Path) -> None:
    from pydantic import TypeAdapter

    from candlekeep.queries.encode import plain
    from candlekeep.queries.providers import ProviderView

    cfg = market_config(tmp_path)
    assert "no provider checked yet" in cli(cfg, "providers")
    probed = cli_json(cfg, "providers", "--probe")
    assert [(p["source"], p["status"], p["probed"]) for p in probed] == [("sim", "up", True)]
    assert probed[0]["calls"] == 1 and probed[0]["circuit"] == "closed"
    history = cli_json(cfg, "history")
    assert any(r["job"] == "providers_health" and r["status"] == "success"
               for r in history)
    # Shown, not recorded: nothing in the table, no health.json.
    assert "no provider checked yet" in cli(cfg, "providers")
    assert not (tmp_path / "data" / "health.json").exists()

    await _record_down(cfg)
    # A probe from this fresh process finds it up, and leaves the daemon's verdict alone.
    again = cli_json(cfg, "providers", "--probe")
    assert [(p["source"], p["status"]) for p in again] == [("sim", "up")]
    listed = cli_json(cfg, "providers", ok=(1,))
    assert [(p["source"], p["status"], p["node"]) for p in listed] == [
        ("sim", "down", "node-a")]
    assert "503" in listed[0]["reasons"][0]
    text = cli(cfg, "providers", ok=(1,))
    assert "down" in text and "node-a" in text

    banner = cli_json(cfg, "list")["health"]["unwell_providers"]
    assert [(b["source"], b["status"], b["stale"]) for b in banner] == [("sim", "down", False)]
    assert "provider sim down: circuit open" in cli(cfg, "list")

    with serving(cfg) as api:
        served = api.json("/providers")
        assert served == listed
        assert plain(TypeAdapter(list[ProviderView]).validate_python(served)) == served
        assert api.json("/jobs")["health"]["unwell_providers"] == banner
        resp = api.get("/system/health")
        assert resp.status_code == 200  # a provider's outage is not candlekeep's: no 503
        parts = {(c["kind"], c["name"]): c for c in resp.json()["components"]}
        sim = parts[("source", "sim")]
        assert sim["status"] == "degraded" and sim["detail"].startswith("sim, down: circuit")
