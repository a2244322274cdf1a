"""``candlekeep serve`` against a config filled by real jobs: each route's content, the CLI
and the API agreeing, auth, bad input, the offline docs and metrics."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.serving import TOKEN, Served, cli, market_config, now_ms, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Served]]:
    cfg = market_config(tmp_path_factory.mktemp("site"))
    cli(cfg, "backfill")
    cli(cfg, "run", "gaps")
    cli(cfg, "run", "broken", ok=(1,))
    cli(cfg, "run", "freshness", ok=(0, 1))
    with serving(cfg) as served:
        yield cfg, served


def cli_json(cfg: Path, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
    import json

    return json.loads(cli(cfg, *args, "--json", ok=ok))


def without(data: Any, *keys: str) -> Any:
    """``data`` with the keys that depend on the moment of asking dropped."""
    if isinstance(data, dict):
        return {k: without(v, *keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [without(v, *keys) for v in data]
    return data


def test_health_answers_without_a_token(site: tuple[Path, Served]) -> None:
    _, api = site
    resp = api.get("/health", token=None)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    head = api.client.head(api.url + "/health")
    assert head.status_code == 200 and head.content == b""


def test_jobs_runs_and_gaps_are_what_the_cli_lists(site: tuple[Path, Served]) -> None:
    cfg, api = site
    listed = cli_json(cfg, "list")
    served = api.json("/jobs")
    volatile = ("next_run_relative", "state_db_ms")
    assert without(served, *volatile) == without(listed, *volatile)
    jobs = {j["name"]: j for j in served["jobs"]}
    assert jobs["broken"]["last_status"] == "failed"
    assert served["health"]["failing_jobs"] == ["broken"]
    assert jobs["ingest"]["schedule_words"] == "every 5 minutes"

    assert api.json("/runs?limit=200")["items"] == cli_json(cfg, "history")
    gaps = api.json("/gaps?limit=500")
    assert gaps["items"] == cli_json(cfg, "gaps", "list") and gaps["items"]
    assert all(g["status"] == "open" and g["candles"] >= 1 for g in gaps["items"])


def test_runs_are_paged_and_filtered(site: tuple[Path, Served]) -> None:
    _, api = site
    everything = api.json("/runs?limit=500")["items"]
    assert {r["job"] for r in everything} >= {"backfill", "gaps", "broken", "freshness"}
    first = api.json("/runs?limit=1")
    second = api.json(f"/runs?limit=1&offset={first['next_offset']}")
    assert [first["items"][0], second["items"][0]] == everything[:2]
    (failed,) = api.json("/runs?status=failed&since=1h")["items"]
    assert failed["job"] == "broken" and "disk full" in failed["error"]
    either = api.json("/runs?status=failed&status=success&limit=500")["items"]
    assert {r["status"] for r in either} == {"failed", "success"}
    assert len(either) == len([r for r in everything if r["status"] in ("failed", "success")])
    assert api.json("/runs?job=gaps")["items"][0]["status"] == "success"
    assert api.json(f"/runs?since={now_ms() + 60_000}")["items"] == []
    last = api.json(f"/runs?limit=1&offset={len(everything) - 1}")
    assert last["next_offset"] is None


def test_gap_summary_and_filters(site: tuple[Path, Served]) -> None:
    _, api = site
    items = api.json("/gaps?limit=500")["items"]
    summary = api.json("/gaps/summary")
    assert summary["open"] == len(items) and summary["repaired_24h"] == 0
    assert summary["oldest_open"]["id"] == min(items, key=lambda g: (g["detected_at"],
                                                                     g["id"]))["id"]
    btc = api.json("/gaps?symbol=BTC/USDT&timeframe=1m&limit=500")["items"]
    assert btc == [g for g in items if g["series"] == "sim:BTC/USDT:1m"]
    page = api.json("/gaps?limit=1")
    assert page["next_offset"] == (1 if len(items) > 1 else None)


def test_coverage_is_the_commands_after_it_reconciled(site: tuple[Path, Served]) -> None:
    cfg, api = site
    command = cli_json(cfg, "coverage")
    served = api.json("/coverage")
    assert served == command
    assert len(served) == 4 and all(c["stored_exact"] for c in served)
    btc = next(c for c in served if c["series"] == "sim:BTC/USDT:1m")
    assert btc["missing"] == sum(g["candles"] for g in api.json(
        "/gaps?symbol=BTC/USDT&timeframe=1m&limit=500")["items"])
    assert api.json("/coverage?timeframe=1h") == [c for c in served if c["timeframe"] == "1h"]


def test_ingestion_status_and_freshness(site: tuple[Path, Served]) -> None:
    _, api = site
    rows = api.json("/ingestion/status")
    assert {(r["symbol"], r["timeframe"]) for r in rows} == {
        (s, tf) for s in ("BTC/USDT", "ETH/USDT") for tf in ("1m", "1h")}
    coverage = {c["series"]: c for c in api.json("/coverage")}
    for r in rows:
        key = f"{r['source']}:{r['symbol']}:{r['timeframe']}"
        assert r["newest_ms"] == coverage[key]["last_ms"] and r["rows_estimate"] > 0
        assert r["newest_utc"].endswith("Z") and r["age_ms"] >= 0 and r["status"] == "ok"
    (eth,) = api.json("/ingestion/status?symbol=ETH/USDT&timeframe=1h")
    assert eth["symbol"] == "ETH/USDT"
    verdicts = api.json("/freshness")
    assert {v["subject"] for v in verdicts} == set(coverage)


def test_system_status_and_health(site: tuple[Path, Served]) -> None:
    _, api = site
    status = api.json("/system/status")
    assert status["state_db"]["reachable"] and status["state_db"]["type"] == "sqlite"
    (store,) = status["stores"]
    assert store["name"] == "main" and store["reachable"] and store["latency_ms"] >= 0
    resp = api.get("/system/health")
    assert resp.status_code == 200
    health = resp.json()
    parts = {(c["kind"], c["name"]): c for c in health["components"]}
    assert parts[("state_db", "state_db")]["status"] == "ok"
    assert parts[("store", "main")]["status"] == "ok"
    assert parts[("source", "sim")]["status"] == "ok"
    # scheduled jobs and no daemon: working, but worth a look
    assert parts[("scheduler", "scheduler")]["status"] == "degraded"
    assert health["status"] == "degraded"


def test_every_route_but_health_and_metrics_wants_the_token(
        site: tuple[Path, Served]) -> None:
    _, api = site
    for path in ("/jobs", "/runs", "/gaps", "/gaps/summary", "/coverage", "/ingestion/status",
                 "/freshness", "/nodes", "/system/status", "/system/health", "/openapi.json",
                 "/docs"):
        for token in (None, "wrong-token"):
            resp = api.get(path, token=token)
            assert resp.status_code == 401, (path, token, resp.status_code)
            assert "Bearer" in resp.json()["detail"]
    assert api.get("/metrics", token=None).status_code == 200
    page = api.get("/", token=None, headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"


def test_a_browser_logs_in_with_the_token_and_gets_a_cookie(site: tuple[Path, Served]) -> None:
    _, api = site
    form = api.get("/login", token=None)
    assert form.status_code == 200 and 'name="token"' in form.text
    bad = api.client.post(api.url + "/login", data={"token": "nope", "next": "/jobs"})
    assert bad.status_code == 401 and "not the API token" in bad.text
    assert "candlekeep_session" not in bad.headers.get("set-cookie", "")
    ok = api.client.post(api.url + "/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    session = ok.cookies["candlekeep_session"]
    with httpx.Client(base_url=api.url, cookies={"candlekeep_session": session}) as browser:
        for path in ("/jobs", "/docs", "/openapi.json"):
            assert browser.get(path).status_code == 200, path
    forged = session[:-1] + ("0" if session[-1] != "0" else "1")
    with httpx.Client(base_url=api.url, cookies={"candlekeep_session": forged}) as browser:
        assert browser.get("/jobs").status_code == 401


@pytest.mark.parametrize(("query", "named"), [
    ("/runs?limit=0", "limit"),
    ("/runs?limit=100000", "limit"),
    ("/runs?offset=-1", "offset"),
    ("/runs?offset=999999999", "offset"),
    ("/runs?status=exploded", "status"),
    ("/runs?job=x';DROP TABLE runs;--", "job"),
    ("/runs?since=yesterday", "since"),
    ("/runs?since=2026-13-45", "since"),
    ("/gaps?status=closed", "status"),
    ("/gaps?symbol=BTC' OR '1'='1", "symbol"),
    ("/gaps?source=" + "a" * 10_000, "source"),
    ("/gaps?timeframe=7m", "timeframe"),
    ("/ingestion/status?symbol=%00", "symbol"),
    ("/coverage?timeframe=1m;--", "timeframe"),
])
def test_bad_query_values_are_422_naming_the_parameter(
        site: tuple[Path, Served], query: str, named: str) -> None:
    _, api = site
    resp = api.get(query)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert named in body["detail"] and body["errors"][0]["parameter"] == named
    assert "DROP" not in resp.text and "a" * 100 not in resp.text  # never echoed


def test_unknown_routes_are_404_json(site: tuple[Path, Served]) -> None:
    _, api = site
    resp = api.get("/no/such/route")
    assert resp.status_code == 404 and "/no/such/route" in resp.json()["detail"]


def test_docs_work_offline(site: tuple[Path, Served]) -> None:
    _, api = site
    page = api.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert refs and all(r.startswith("/docs/assets/") for r in refs), refs
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for ref in refs:
        asset = api.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 500, ref
    schema = api.json("/openapi.json")
    assert {"/health", "/jobs", "/runs", "/gaps", "/gaps/summary", "/coverage",
            "/ingestion/status", "/freshness", "/system/status", "/system/health",
            "/metrics"} <= set(schema["paths"])
    assert "RunView" in schema["components"]["schemas"]
    assert api.get("/docs/assets/../../etc/passwd").status_code == 404


def test_metrics_tell_the_state_db_s_facts(site: tuple[Path, Served]) -> None:
    _, api = site
    text = api.get("/metrics", token=None).text
    values = dict(re.findall(r"^(candlekeep_\S+) (\S+)$", text, re.M))
    assert values["candlekeep_state_db_up"] == "1.0"
    assert values['candlekeep_runs_last_24h{job="broken",status="failed"}'] == "1.0"
    assert float(values['candlekeep_job_last_success_timestamp_seconds{job="gaps"}']) > 0
    summary = api.json("/gaps/summary")
    assert float(values['candlekeep_gaps{status="open"}']) == summary["open"]
    lag = float(values['candlekeep_series_lag_seconds{source="sim",store="main",'
                       'symbol="BTC/USDT",timeframe="1m"}'])
    assert 0 <= lag < 600
    assert "# TYPE candlekeep_run_duration_seconds histogram" in text
    assert "# TYPE candlekeep_source_rate_limited_total counter" in text


def test_the_token_is_never_logged_or_shown(site: tuple[Path, Served]) -> None:
    _, api = site
    for path in ("/jobs", "/system/health", "/openapi.json", "/metrics"):
        assert TOKEN not in api.get(path).text
    api.get("/runs?limit=0")  # an error response too
    # where a careless server would write it: a failed login's form, a refused header
    bad = api.client.post(api.url + "/login", data={"token": f"{TOKEN}-typo", "next": "/"})
    assert bad.status_code == 401 and TOKEN not in bad.text
    with httpx.Client(base_url=api.url) as fresh:  # no session cookie of other tests
        wrong = fresh.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}-typo"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text
    log = api.log()
    assert '"GET /jobs HTTP/1.1" 200' in log  # access lines are written…
    assert TOKEN not in log  # …without the token


def test_every_route_answers_exactly_its_documented_model(site: tuple[Path, Served]) -> None:
    """The response models in /openapi.json are what the dashboard and scripts build on:
    each answer parses into its model and back to the same JSON, no key more or less."""
    from pydantic import TypeAdapter

    from candlekeep.queries import coverage, freshness, gaps, health, jobs
    from candlekeep.queries.encode import plain

    _, api = site
    models: dict[str, Any] = {
        "/jobs": jobs.JobList, "/nodes": list[jobs.NodeView], "/runs": jobs.RunPage,
        "/gaps": gaps.GapPage, "/gaps/summary": gaps.GapSummary,
        "/coverage": list[coverage.CoverageView],
        "/ingestion/status": list[freshness.SeriesStatusView],
        "/freshness": list[freshness.FreshnessView],
        "/system/status": health.SystemStatus, "/system/health": health.HealthView,
    }
    for path, model in models.items():
        data = api.json(path)
        assert data or path == "/nodes", path  # no daemon has run here
        assert plain(TypeAdapter(model).validate_python(data)) == data, path


def raw_request(url: str, head: str, body: bytes) -> bytes:
    """What the server answers to ``head`` and the start of ``body`` on a socket, the rest
    of the body never sent: a server waiting for it times out the read."""
    where = urlsplit(url)
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        return conn.recv(4096)


def test_a_huge_login_form_is_refused_before_it_is_read(site: tuple[Path, Served]) -> None:
    """A login body is read up to 4 KiB: a declared 300 MB, or chunks without end, get 413
    at once instead of being gathered in memory."""
    _, api = site
    declared = raw_request(api.url, "POST /login HTTP/1.1\nHost: 127.0.0.1\n"
                           "Content-Type: application/x-www-form-urlencoded\n"
                           "Content-Length: 300000000\n", b"token=" + b"a" * 8000)
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    chunk = b"1000\r\n" + b"a" * 4096 + b"\r\n"
    streamed = raw_request(api.url, "POST /login HTTP/1.1\nHost: 127.0.0.1\n"
                           "Content-Type: application/x-www-form-urlencoded\n"
                           "Transfer-Encoding: chunked\n", chunk * 3)
    assert streamed.startswith(b"HTTP/1.1 413"), streamed[:200]
    assert api.get("/health", token=None).status_code == 200


def test_a_bad_since_is_named_not_echoed(site: tuple[Path, Served]) -> None:
    _, api = site
    resp = api.get("/runs?since=2026-13-45")
    assert resp.status_code == 422 and resp.json()["errors"][0]["parameter"] == "since"
    assert "2026-13-45" not in resp.text
