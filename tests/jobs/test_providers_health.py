"""The ``providers_health`` job over a real SimSource whose exchange is made to fail: it
records every provider in ``provider_health`` and ``health.json`` (SQLite and PostgreSQL),
succeeds while a provider is down, and marks a degraded source for the doubled TTL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError
from candlekeep.jobs.runtime import Runtime
from candlekeep.queries.encode import plain
from candlekeep.queries.providers import providers
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.base import MARKETS_TTL_MS
from candlekeep.sources.health import UNKNOWN_SCORE
from candlekeep.sources.sim_source import SimSource
from candlekeep.state.db import reader_on
from tests.jobs.conftest import NOW, START, make_config
from tests.jobs.test_pipeline import run

H = 3_600_000


def _runtime(tmp_path: Path, clock: FakeClock, ex: SimExchange, state: str | None = None,
             ) -> Runtime:
    extra = {"sources": {"sim": {"type": "sim", "seed": 7}, "spare": {"type": "sim",
                                                                     "seed": 8}}}
    if state is not None:
        extra["state"] = state  # type: ignore[assignment]
    cfg = make_config(tmp_path, [{"source": "sim", "symbols": ["BTC/USDT"],
                                  "timeframes": ["1m"], "start": START}], **extra)
    return Runtime(cfg, clock=clock, sources={
        "sim": SimSource("sim", exchange=ex, clock=clock, max_attempts=2)})


async def _trip(rt: Runtime, ex: SimExchange) -> None:
    """Five consecutive 5xx from the exchange: the source's circuit opens."""
    ex.force("503", 5)
    src = rt.source("sim")
    for _ in range(3):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - H, NOW)
    assert src.circuit.state == "open"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_records_a_down_provider_and_succeeds(tmp_path: Path, backend: str,
                                                    request: pytest.FixtureRequest) -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    state = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    rt = _runtime(tmp_path, clock, ex, state)
    try:
        await _trip(rt, ex)
        res = await run(rt, "providers_health")
        assert res.ok, res.errors
        by_source = {p["source"]: p for p in res.details["providers"]}
        assert by_source["sim"]["status"] == "down" and by_source["sim"]["score"] == 0.0
        assert by_source["spare"]["status"] == "up"
        assert any(w.startswith("provider sim down: circuit open") for w in res.warnings)
        assert rt.source("sim").degraded and not rt.source("spare").degraded
        assert rt.source("sim").markets_ttl_ms() == 2 * MARKETS_TTL_MS

        with reader_on(rt.state.engine) as reader:
            views = {v.source: v for v in providers(reader, clock.now_ms())}
        sim = views["sim"]
        assert sim.status == "down" and sim.circuit == "open" and sim.failures == 5
        assert not sim.stale
        # The open circuit refused the probe: nothing went out, so no request is counted.
        assert not sim.probed and res.requests == 0
        assert sim.probe_error is not None and sim.probe_error.startswith("circuit open")
        assert sim.last_error is not None and "503" in sim.last_error
        assert sim.node == rt.node and sim.checked_at == clock.now_ms()
        spare = views["spare"]  # no series: its probe is the (in-process) market list
        assert spare.status == "up" and not spare.probed and spare.calls == 0
        assert spare.score == UNKNOWN_SCORE
        # health.json holds what the read model reads, every source's latest.
        doc = json.loads((rt.config.data_dir / "health.json").read_text())
        assert [p["source"] for p in doc["providers"]] == ["sim", "spare"]
        assert doc["providers"][0] == json.loads(json.dumps(plain(sim)))
        assert {p["source"]: p["status"] for p in doc["providers"]} == {
            "sim": "down", "spare": "up"}
        assert not list(rt.config.data_dir.glob(".health.json*"))  # no temporary left

        # Recovered: the cool-down passes, the probes close the circuit; only sim checked,
        # spare's last verdict stays in health.json.
        clock.set(sim.circuit_until or 0)
        res = await run(rt, "providers_health", sources=["sim"])
        assert res.details["providers"][0]["circuit"] == "half_open"  # one probe of two
        assert res.details["providers"][0]["status"] == "degraded"
        await run(rt, "providers_health", sources=["sim"])
        with reader_on(rt.state.engine) as reader:
            views = {v.source: v for v in providers(reader)}
        assert views["sim"].circuit == "closed" and views["sim"].status == "up"
        assert views["spare"].checked_at == sim.checked_at
        assert not rt.source("sim").degraded
        doc = json.loads((rt.config.data_dir / "health.json").read_text())
        assert {p["source"]: p["status"] for p in doc["providers"]} == {
            "sim": "up", "spare": "up"}
        with rt.state.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT COUNT(*) FROM provider_health").scalar()
        assert rows == 4
    finally:
        await rt.aclose()


async def test_history_older_than_keep_is_pruned(tmp_path: Path) -> None:
    clock = FakeClock(NOW, autoadvance=True)
    rt = _runtime(tmp_path, clock, SimExchange(7, clock=clock))
    try:
        await run(rt, "providers_health", probe=False)
        clock.set(NOW + 2 * H)
        res = await run(rt, "providers_health", probe=False, keep="1h")
        assert res.ok and res.requests == 0
        with rt.state.engine.connect() as conn:
            kept = conn.exec_driver_sql("SELECT checked_at FROM provider_health").scalars()
            assert set(kept) == {NOW + 2 * H}
    finally:
        await rt.aclose()


async def test_unknown_source_is_a_config_error(tmp_path: Path) -> None:
    clock = FakeClock(NOW, autoadvance=True)
    rt = _runtime(tmp_path, clock, SimExchange(7, clock=clock))
    try:
        res = await run(rt, "providers_health", sources=["nope"])
        assert not res.ok
        assert "jobs." in res.errors[0] and "nope" in res.errors[0] and "sim" in res.errors[0]
    finally:
        await rt.aclose()


def _insert_detail(rt: Runtime, source: str, detail: dict[str, object], checked_at: int,
                   node: str = "old-build") -> None:
    """A row written straight into the table, as another build would have written it."""
    from candlekeep.state import ops_tables as o

    with rt.state.engine.begin() as conn:
        conn.execute(o.provider_health.insert().values(
            source=source, type="sim", status=detail["status"], score=detail["score"],
            circuit=detail["circuit"], calls=0, requests=0, node=node,
            checked_at=checked_at, detail=json.dumps(detail)))


async def test_rows_of_another_shape_are_read(tmp_path: Path) -> None:
    """A row from an earlier build (an extra ``budget_effective``, no ``limiter`` nor
    ``probed``) is read: unknown keys dropped, missing ones None."""
    clock = FakeClock(NOW, autoadvance=True)
    rt = _runtime(tmp_path, clock, SimExchange(7, clock=clock))
    try:
        await run(rt, "providers_health", probe=False, sources=["spare"])
        with reader_on(rt.state.engine) as reader:
            (spare,) = providers(reader)
        old = json.loads(json.dumps(plain(spare)))
        for key in ("node", "checked_utc", "limiter", "probed"):
            old.pop(key, None)
        old |= {"source": "sim", "status": "down", "budget_effective": 900,
                "checked_at": NOW + 1}
        _insert_detail(rt, "sim", old, NOW + 1)
        with reader_on(rt.state.engine) as reader:
            views = {v.source: v for v in providers(reader)}
        sim = views["sim"]
        assert sim.status == "down" and sim.node == "old-build" and sim.unwell
        assert sim.limiter is None and sim.probed is None
        assert not hasattr(sim, "budget_effective")
        assert views["spare"].status == "up"
    finally:
        await rt.aclose()


async def test_an_unrecorded_check_leaves_the_recorded_verdict(tmp_path: Path) -> None:
    """``record=False`` (``candlekeep providers --probe``): a fresh process's verdict comes
    back in the run's details and neither the table nor health.json changes, so the
    daemon's open circuit stays the latest verdict."""
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    rt = _runtime(tmp_path, clock, ex)
    try:
        await _trip(rt, ex)
        await run(rt, "providers_health", probe=False)
        health_file = rt.config.data_dir / "health.json"
        before = health_file.read_text()
        fresh = _runtime(tmp_path, clock, SimExchange(7, clock=clock))  # closed breaker
        try:
            res = await run(fresh, "providers_health", record=False)
        finally:
            await fresh.aclose()
        assert res.ok and res.requests == 1 and not res.artifacts
        found = {d["source"]: d for d in res.details["found"]}
        assert found["sim"]["status"] == "up" and found["sim"]["probed"]
        assert res.details["node"] == fresh.node
        with reader_on(rt.state.engine) as reader:
            views = {v.source: v for v in providers(reader)}
        assert views["sim"].status == "down" and views["sim"].circuit == "open"
        assert health_file.read_text() == before
        with rt.state.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT COUNT(*) FROM provider_health").scalar()
        assert rows == 2
    finally:
        await rt.aclose()


async def test_an_old_verdict_is_stale_and_health_says_so(tmp_path: Path) -> None:
    """A down verdict nobody re-checked: still unwell (no false recovery), but marked stale,
    and /system/health's source component says so."""
    from candlekeep.queries.health import _source
    from candlekeep.queries.providers import STALE_AFTER_MS

    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    rt = _runtime(tmp_path, clock, ex)
    try:
        await _trip(rt, ex)
        await run(rt, "providers_health", probe=False, sources=["sim"])
        checked = clock.now_ms()
        with reader_on(rt.state.engine) as reader:
            (fresh,) = providers(reader, checked + STALE_AFTER_MS)
            (old,) = providers(reader, checked + STALE_AFTER_MS + 1)
        assert not fresh.stale and old.stale and old.unwell
        assert not _source("sim", "sim", fresh, checked).detail.startswith("sim, stale")
        part = _source("sim", "sim", old, checked + 3 * H)
        assert part.detail.startswith("sim, stale, checked 3h") and "down" in part.detail
    finally:
        await rt.aclose()
