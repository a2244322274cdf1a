"""The API server in this process: uvicorn on an ephemeral loopback port in the test's event
loop, over a real SQLite state DB, with an injected clock where time matters. What a
process-level test cannot reach: which runtime's counters are shown, how often a scrape
reads the state DB, session expiry, what an unforeseen error answers, and the daemon's
watch over its API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from candlekeep.api.auth import COOKIE, FAILED_LOGIN_S, SESSION_S
from candlekeep.api.errors import INTERNAL
from candlekeep.api.server import ApiServer, ExposureError
from candlekeep.config.models import Config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import TransientSourceError
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.control import DaemonError
from candlekeep.scheduler.daemon import serve
from candlekeep.scheduler.engine import EngineOptions
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from tests.waiting import free_port, until

TOKEN = "in-process-token-8d2a"
HOUR_MS = 3_600_000


def make_config(tmp_path: Path, *, token: str | None = TOKEN, **extra: Any) -> Config:
    (tmp_path / "data").mkdir(exist_ok=True)
    return Config.model_validate({
        "data_dir": str(tmp_path / "data"),
        "stores": {"main": {"type": "duckdb", "path": str(tmp_path / "candles.duckdb")}},
        "sources": {"sim": {"type": "sim", "seed": 3}},
        "series": [{"source": "sim", "symbols": ["BTC/USDT"], "timeframes": ["1m"],
                    "start": "2026-01-01"}],
        "jobs": [{"name": "ingest", "type": "ingest", "schedule": "*/5 * * * *"}],
        "api": {"token": token} if token else {},
        **extra,
    })


@contextlib.asynccontextmanager
async def running(config: Config, runtime: Runtime, **kw: Any
                  ) -> AsyncIterator[tuple[ApiServer, httpx.AsyncClient]]:
    """The API served in this loop, as the daemon serves it, and a client of it."""
    kw.setdefault("host", "127.0.0.1")
    srv = ApiServer(config, load_jobs(config), port=0, **kw)
    exits: list[BaseException] = []
    srv.start(runtime, exits.append)
    url = srv.url.replace("0.0.0.0", "127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async def live() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(live, "the API to answer")
            yield srv, client
    finally:
        await srv.stop()
    assert not exits


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_run(config: Config, job: str, scheduled_for: int, status: str,
            trigger: str = "schedule") -> None:
    db = StateDB(config.state_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(t.runs.insert(), [{
                "job": job, "scheduled_for": scheduled_for, "attempt": 1, "node": "n",
                "trigger": trigger, "status": status, "started_at": scheduled_for,
                "finished_at": scheduled_for + 50, "rows_written": 0, "requests": 0}])
    finally:
        db.dispose()


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- /metrics ---------------------------------------------------------------------------


async def test_concurrent_scrapes_read_the_state_db_once(tmp_path: Path) -> None:
    """/metrics needs no token: 60 scrapers at once cost the state DB one read, not 60
    (unless the answer cache is off, the benchmarks' knob)."""
    config = make_config(tmp_path)
    statements: list[str] = []

    def traced(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(statements.append)

    sa.event.listen(sa.engine.Engine, "connect", traced)
    try:
        for keep, reads in ((None, 1), (0.0, 60)):
            statements.clear()
            runtime = Runtime(config)
            async with running(config, runtime, keep_s=keep) as (_, api):
                answers = await asyncio.gather(*(api.get("/metrics") for _ in range(60)))
            await runtime.aclose()
            assert {a.status_code for a in answers} == {200}
            counted = [s for s in statements if "GROUP BY job, status" in s]
            assert len(counted) == reads, (keep, len(counted))
    finally:
        sa.event.remove(sa.engine.Engine, "connect", traced)


async def test_runs_last_24h_are_the_24h_before_the_scrape(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    clock = FakeClock(1_780_000_000_000)
    now = clock.now_ms()
    add_run(config, "ingest", now - HOUR_MS, "success")
    add_run(config, "ingest", now - 25 * HOUR_MS, "success")  # too old
    add_run(config, "ingest", now + HOUR_MS, "success")  # ahead: not in the last 24 h
    runtime = Runtime(config, clock=clock)
    async with running(config, runtime) as (_, api):
        text = (await api.get("/metrics")).text
    await runtime.aclose()
    assert sample(text, 'candlekeep_runs_last_24h{job="ingest",status="success"}') == 1


async def test_source_counters_are_those_of_the_runtime_serving(tmp_path: Path) -> None:
    """Another Runtime in the process (a second app, a test) and its sources' requests are
    not this API's: the counters are the serving runtime's own sources'."""
    config = make_config(tmp_path)
    clock = FakeClock(1_780_000_000_000)
    other, mine = Runtime(config, clock=clock), Runtime(config, clock=clock)
    start = clock.now_ms() - 2 * HOUR_MS
    await other.source("sim").fetch_candles("BTC/USDT", "1m", start, start + HOUR_MS)
    name = 'candlekeep_source_requests_total{source="sim"}'
    async with running(config, mine, keep_s=0) as (_, api):  # every scrape fresh
        assert sample((await api.get("/metrics")).text, name) is None
        src = mine.source("sim")
        await src.fetch_candles("BTC/USDT", "1m", start, start + 10 * 60_000)
        assert src.stats.requests > 0
        assert sample((await api.get("/metrics")).text, name) == src.stats.requests
        state = 'candlekeep_source_circuit_state{source="sim"}'
        assert sample((await api.get("/metrics")).text, state) == 0  # closed
        for _ in range(src.circuit.config.failures):
            src.circuit.before().failed(TransientSourceError("HTTP 503"))
        assert sample((await api.get("/metrics")).text, state) == 2  # open
    assert other.source("sim").stats.requests > 0
    await other.aclose()
    await mine.aclose()


async def test_rate_budgets_are_gauges_of_the_serving_runtimes_sources(tmp_path: Path) -> None:
    from candlekeep.api.metrics import SourceCollector

    config = make_config(tmp_path, sources={
        "bn": {"type": "ccxt", "exchange": "binance", "base_url": "http://127.0.0.1:9"},
        "fixed": {"type": "ccxt", "exchange": "binance", "base_url": "http://127.0.0.1:9",
                  "rate_limit": {"weight": 1200, "window": "1m"}}})
    runtime = Runtime(config, clock=FakeClock(1_780_000_000_000))
    runtime.source("bn"), runtime.source("fixed")  # made, no request sent
    budgets = {tuple(s.labels.values()): s.value for fam in SourceCollector(runtime).collect()
               if fam.name == "candlekeep_source_budget" for s in fam.samples}
    assert budgets == {("bn", "effective"): 6000, ("bn", "advertised"): 6000,
                       ("fixed", "effective"): 1200, ("fixed", "advertised"): 1200}
    await runtime.aclose()


# -- errors -----------------------------------------------------------------------------


async def test_an_unforeseen_error_is_a_json_500_and_a_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path)
    runtime = Runtime(config)

    async def boom() -> None:
        raise RuntimeError("internal detail 4242")

    async with running(config, runtime) as (srv, api):
        assert srv.app is not None
        srv.app.add_api_route("/boom", boom)
        with caplog.at_level(logging.ERROR, logger="candlekeep.api"):
            resp = await api.get("/boom", headers=bearer())
    await runtime.aclose()
    assert resp.status_code == 500 and resp.json() == {"detail": INTERNAL}
    assert "4242" not in resp.text
    (record,) = [r for r in caplog.records if r.message.startswith("request failed")]
    assert "/boom" in record.message and record.exc_info is not None
    assert "4242" in str(record.exc_info[1])


async def test_statuses_of_a_newer_node_are_shown_as_written(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    clock = FakeClock(1_780_000_000_000)
    db = StateDB(config.state_url)
    SchedulerStore(db, Owner("n", "h/1/x", 15_000)).ensure_jobs(load_jobs(config),
                                                               clock.now_ms() - HOUR_MS)
    db.dispose()
    add_run(config, "ingest", clock.now_ms() - 60_000, "paused", trigger="webhook")
    runtime = Runtime(config, clock=clock)
    async with running(config, runtime) as (_, api):
        runs = await api.get("/runs", headers=bearer())
        jobs = await api.get("/jobs", headers=bearer())
    await runtime.aclose()
    assert runs.status_code == 200, runs.text
    (run,) = runs.json()["items"]
    assert (run["status"], run["trigger"]) == ("paused", "webhook")
    assert jobs.status_code == 200, jobs.text
    assert jobs.json()["jobs"][0]["last_status"] == "paused"


# -- sessions ---------------------------------------------------------------------------


async def test_a_failed_login_waits_without_holding_other_requests(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    clock = FakeClock(1_780_000_000_000)
    runtime = Runtime(config, clock=clock)
    async with running(config, runtime) as (_, api):
        login = asyncio.ensure_future(api.post("/login", data={"token": "wrong"}))
        await until(lambda: clock.sleepers == 1, "the failed login to wait")
        assert (await api.get("/health")).status_code == 200
        assert not login.done()
        await clock.advance(FAILED_LOGIN_S)
        assert (await login).status_code == 401
        ok = await api.post("/login", data={"token": TOKEN})
    await runtime.aclose()
    assert ok.status_code == 303 and clock.slept == [FAILED_LOGIN_S]


async def test_a_session_ends_on_the_server_after_its_lifetime(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    clock = FakeClock(1_780_000_000_000)
    runtime = Runtime(config, clock=clock)
    async with running(config, runtime) as (_, api):
        ok = await api.post("/login", data={"token": TOKEN})
        session = ok.cookies[COOKIE]
        issued, _, mac = session.partition(".")
        assert int(issued) == clock.now_ms() // 1000 and len(mac) == 64
        assert "Secure" not in ok.headers["set-cookie"]  # loopback: plain http works
        api.cookies.clear()

        async def status(value: str) -> int:
            return (await api.get("/jobs", headers={"Cookie": f"{COOKIE}={value}"})
                    ).status_code

        assert await status(session) == 200
        assert await status(f"{int(issued) + 60}.{mac}") == 401  # issued-at is signed
        clock.set(clock.now_ms() + (SESSION_S - 1) * 1000)
        assert await status(session) == 200
        clock.set(clock.now_ms() + 1000)
        assert await status(session) == 401  # whatever the browser still holds
    await runtime.aclose()


async def test_cookies_are_secure_when_served_beyond_this_host(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    runtime = Runtime(config)
    async with running(config, runtime, host="0.0.0.0") as (_, api):
        ok = await api.post("/login", data={"token": TOKEN})
        assert ok.status_code == 303 and "Secure" in ok.headers["set-cookie"]
        # with a token, the Host header is not what guards it
        forged = await api.get("/jobs", headers={"Host": "rebind.example", **bearer()})
        assert forged.status_code == 200
    await runtime.aclose()


# -- the server object ------------------------------------------------------------------


def test_nothing_stays_bound_when_the_app_cannot_be_built(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path, state="nosuchdb://nowhere/x")
    with pytest.raises(Exception, match="nosuchdb") as failed:
        ApiServer(config, [], host="127.0.0.1", port=port).open()
    with socket.socket() as again:  # a listener left open would hold the port, for as
        again.bind(("127.0.0.1", port))  # long as the error (its traceback) lives
        again.listen()
    assert failed.value is not None
    exposed = ApiServer(make_config(tmp_path, token=None), [], host="0.0.0.0", port=port)
    with pytest.raises(ExposureError):
        exposed.open()
    with socket.socket() as again:
        again.bind(("0.0.0.0", port))


async def test_the_daemon_stops_with_an_error_when_its_api_dies(tmp_path: Path) -> None:
    """uvicorn ending on its own (not asked by the daemon) is seen: the daemon drains and
    ends with an error naming the API instead of running on without /health."""
    config = make_config(tmp_path)
    srv = ApiServer(config, [], host="127.0.0.1", port=0)
    daemon = asyncio.ensure_future(serve(config, [], EngineOptions(heartbeat_s=0.5),
                                         "api-test", api=srv))
    await until(lambda: srv.server is not None and srv.server.started, "the API to serve")
    async with httpx.AsyncClient(base_url=srv.url) as client:
        assert (await client.get("/health")).status_code == 200
    assert srv.server is not None
    srv.server.should_exit = True  # as if it had ended by itself
    with pytest.raises(DaemonError, match="HTTP API stopped unexpectedly"):
        await asyncio.wait_for(daemon, 30)


def test_the_scheduler_does_not_import_the_web_stack() -> None:
    code = ("import sys, candlekeep.scheduler.daemon, candlekeep.cli.scheduler_cmds; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn') or m.startswith('candlekeep.api')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
