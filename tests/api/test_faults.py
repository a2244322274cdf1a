"""The API when things are wrong: the state DB unreachable or dropped, an exposed address
without a token, and the daemon serving it (started and stopped as a user would)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from candlekeep.state.version import SCHEMA_VERSION
from tests.api.serving import TOKEN, cli, market_config, serving, wait_for
from tests.pg import PG_ADMIN, throwaway_database
from tests.scheduler.procs import ENV, Daemon
from tests.waiting import free_port

pytestmark = pytest.mark.slow


def test_state_db_unreachable_keeps_health_up_and_names_it(tmp_path: Path) -> None:
    cfg = market_config(tmp_path, state=f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
    with serving(cfg) as api:
        assert api.get("/health", token=None).status_code == 200
        resp = api.get("/system/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "down"
        (state_db,) = [c for c in body["components"] if c["kind"] == "state_db"]
        assert state_db["status"] == "down" and "unreachable" in state_db["detail"]
        store = next(c for c in body["components"] if c["kind"] == "store")
        assert store["status"] == "ok"  # only what is down is named down
        jobs = api.get("/jobs")
        assert jobs.status_code == 503 and jobs.json()["component"] == "state_db"
        assert "state DB unavailable" in jobs.json()["detail"]
        metrics = api.get("/metrics", token=None)
        assert metrics.status_code == 200 and "candlekeep_state_db_up 0.0" in metrics.text
        for _ in range(30):  # an outage's requests do not flood the log
            assert api.get("/runs").status_code == 503
            api.get("/metrics", token=None)
        log = api.log()
        assert 1 <= log.count("state DB unavailable") <= 2, log
        assert log.count("metrics: state DB unreadable") <= 2, log


def test_postgresql_state_db_served_then_dropped(tmp_path: Path) -> None:
    with throwaway_database() as url:
        cfg = market_config(tmp_path, state=url)
        cli(cfg, "backfill", "--symbol", "BTC/USDT", "--timeframe", "1h")
        with serving(cfg) as api:
            (run,) = api.json("/runs")["items"]
            assert run["job"] == "backfill" and run["status"] == "success"
            assert api.json("/system/status")["state_db"]["type"] == "postgresql"
            (btc,) = api.json("/ingestion/status?symbol=BTC/USDT&timeframe=1h")
            assert btc["newest_ms"] is not None and btc["rows_estimate"] >= 24
            assert api.get("/system/health").status_code == 200

            name = url.rsplit("/", 1)[1]
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

            def down() -> httpx.Response | None:
                resp = api.get("/system/health")
                return resp if resp.status_code == 503 else None

            body = wait_for("/system/health to say 503", down, 15).json()
            (state_db,) = [c for c in body["components"] if c["kind"] == "state_db"]
            assert state_db["status"] == "down" and name in state_db["detail"]
            assert api.get("/health", token=None).status_code == 200
            assert api.get("/runs").status_code == 503

            # Back, but empty except for a version row that says the schema is there: the
            # state DB answers a ping, and still cannot be read.
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("CREATE TABLE candlekeep_schema (version INTEGER PRIMARY KEY)")
                db.execute("INSERT INTO candlekeep_schema VALUES (%s)", (SCHEMA_VERSION,))

            def unreadable() -> dict[str, Any] | None:
                resp = api.get("/system/health")
                found: dict[str, Any] = resp.json()
                (part,) = [c for c in found["components"] if c["kind"] == "state_db"]
                return found if resp.status_code == 503 and "scheduler_nodes" in \
                    part["detail"] else None

            body = wait_for("/system/health to name the unreadable state DB", unreadable, 15)
            assert body["status"] == "down"
            assert api.get("/runs").status_code == 503

            with psycopg.connect(url, autocommit=True) as db:  # now truly empty: the API
                db.execute("DROP TABLE candlekeep_schema")   # creates the schema again

            def recovered() -> httpx.Response | None:
                resp = api.get("/runs")
                return resp if resp.status_code == 200 else None

            assert wait_for("/runs to answer again", recovered, 15).json()["items"] == []
            health = api.get("/system/health")
            assert health.status_code == 200 and health.json()["status"] != "down"


def test_an_exposed_address_needs_a_token_or_insecure(tmp_path: Path) -> None:
    cfg = market_config(tmp_path, token=None)
    refused = subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(cfg),
                              "serve", "--host", "0.0.0.0", "--port", "0"],
                             env=ENV, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "refusing to serve the API on 0.0.0.0 without a token" in message
    assert "api.token" in message and "--insecure" in message
    with serving(cfg, "--host", "0.0.0.0", "--insecure") as api:
        assert api.url.startswith("http://0.0.0.0:")
        api.url = api.url.replace("0.0.0.0", "127.0.0.1")
        assert api.get("/jobs", token=None).status_code == 200  # no token: open, as asked
    daemon_cfg = market_config(tmp_path / "d", token=None, listen="0.0.0.0:8765")
    start = subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(daemon_cfg),
                            "start"], env=ENV, capture_output=True, text=True, timeout=60)
    assert start.returncode == 2 and "without a token" in start.stderr


def test_an_exposed_address_needs_a_long_token(tmp_path: Path) -> None:
    cfg = market_config(tmp_path, token="short-token")
    refused = subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(cfg),
                              "serve", "--host", "0.0.0.0", "--port", "0"],
                             env=ENV, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "api.token" in message and "16 characters" in message
    assert "short-token" not in message
    with serving(cfg) as api:  # on loopback a short token is the owner's business
        assert api.get("/jobs", token="short-token").status_code == 200


def test_loopback_is_judged_by_the_address_bound(tmp_path: Path) -> None:
    """Names and spellings of loopback serve without a token; a request naming another
    host (a DNS-rebinding page) is refused."""
    for n, (host, url) in enumerate((("localhost", "http://127.0.0.1:"),
                                     ("[::1]", "http://[::1]:"),
                                     ("::ffff:127.0.0.1", "http://[::ffff:127.0.0.1]:"))):
        (tmp_path / str(n)).mkdir()
        cfg = market_config(tmp_path / str(n), token=None)
        with serving(cfg, "--host", host) as api:
            assert api.url.startswith(url), (host, api.url)
            assert api.get("/jobs", token=None).status_code == 200, host
            port = api.url.rsplit(":", 1)[1]
            for name in ("localhost", "127.0.0.1", "[::1]"):
                ok = api.get("/jobs", token=None, headers={"Host": f"{name}:{port}"})
                assert ok.status_code == 200, (host, name)
            forged = api.get("/jobs", token=None, headers={"Host": f"rebind.example:{port}"})
            assert forged.status_code == 400, (host, forged.status_code)
            assert "rebind.example" not in forged.text


def test_the_daemon_serves_the_api_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    jobs = [{"name": "tick", "type": "noop", "schedule": "* * * * * *"},
            {"name": "ingest", "type": "ingest", "schedule": "*/2 * * * * *"}]
    cfg = market_config(tmp_path, jobs=jobs, listen=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    cli(cfg, "start", "--detach")
    try:
        with httpx.Client(base_url=url, timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            assert api.get("/health").status_code == 200
            def alive() -> dict[str, Any] | None:
                health: dict[str, Any] = api.get("/system/health").json()
                nodes = [c for c in health["components"] if c["kind"] == "node"]
                return health if nodes and nodes[0]["status"] == "ok" else None

            assert wait_for("the node to be alive", alive)["status"] == "ok"

            def ran() -> dict[str, float] | None:
                text = api.get("/metrics").text
                found = {k: float(v) for k, v in re.findall(r"^(candlekeep_\S+) (\S+)$",
                                                           text, re.M)}
                done = found.get('candlekeep_run_duration_seconds_count{job="ingest",'
                                 'status="success"}', 0)
                return found if done >= 1 else None

            metrics = wait_for("an ingest run in /metrics", ran)
            assert metrics['candlekeep_source_requests_total{source="sim"}'] > 0
            assert metrics[f'candlekeep_node_up{{node="{socket.gethostname()}"}}'] == 1
            assert api.get("/jobs").json()["health"]["daemon_local"] is True
    finally:
        cli(cfg, "stop", "--timeout", "10s")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=5)
    log = (cfg.parent / "data" / "logs" / "candlekeep.log").read_text()
    assert "api serving url=" in log and TOKEN not in log


def test_a_store_another_process_writes_is_busy_not_down(tmp_path: Path) -> None:
    """Another process holds the DuckDB file for writing (the daemon's backfill): the probe
    waits for the lock less than its timeout and says busy, a degraded store, not a down
    one."""
    cfg = market_config(tmp_path)
    db = tmp_path / "data" / "candles.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(120)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with serving(cfg) as api:
            status = api.json("/system/status")
            (store,) = status["stores"]
            assert store["busy"] and not store["reachable"], store
            assert "busy (another process is writing)" in store["error"]
            assert status["state_db"]["reachable"]
            resp = api.get("/system/health")
            assert resp.status_code == 200
            parts = resp.json()["components"]
            assert not [c for c in parts if c["status"] == "down"], parts
            (main,) = [c for c in parts if c["kind"] == "store"]
            assert main["status"] == "degraded" and main["detail"].startswith("busy")
    finally:
        holder.kill()
        holder.wait()


def test_a_daemon_whose_api_port_is_taken_says_so_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = market_config(tmp_path, listen=f"127.0.0.1:{port}")
        out = subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(cfg),
                              "start"], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    message = " ".join(out.stderr.split())
    assert f"cannot serve the API on 127.0.0.1:{port}" in message and "in use" in message


def test_the_daemon_api_answers_while_the_state_db_hangs(tmp_path: Path) -> None:
    """The state DB accepts connections and never answers: the daemon keeps trying in a
    thread, and its API answers /health throughout a whole connection attempt."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = free_port()
        cfg = market_config(
            tmp_path, state=f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x",
            jobs=[{"name": "tick", "type": "noop", "schedule": "* * * * * *"}],
            listen=f"127.0.0.1:{port}")
        daemon = Daemon(cfg)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as api:
                def answers() -> bool:
                    try:
                        return api.get("/health").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_for("the API to answer", answers)

                def tried() -> int:
                    return daemon.log().count("state DB unreachable")

                before = tried()

                def another_attempt_ended() -> bool:
                    assert api.get("/health").status_code == 200  # a 2 s read deadline
                    return tried() > before

                wait_for("a connection attempt to end", another_attempt_ended, 90)
            assert daemon.term() == 0
        finally:
            daemon.close()
