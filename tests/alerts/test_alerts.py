"""Alerts end to end: real runs through the one run path (``run_now``) on a real state DB,
told to the alert engine, delivered to a real mail server and a real HTTP server on
loopback. Time is a fake clock, moved between runs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from candlekeep.alerts.engine import AlertEngine
from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.base import Params
from candlekeep.jobs.registry import get_job_type
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import adhoc_spec, run_now
from candlekeep.scheduler.runpath import RunOutcome, execute_attempt
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.validate import load_jobs
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from candlekeep.state import ops_tables as o
from candlekeep.state import tables as t
from candlekeep.state.reader import Reader
from candlekeep.state.statuses import RunStatus
from tests.alerts.conftest import (
    SMTP_PASSWORD,
    HttpServer,
    MailFactory,
    SilentServer,
)
from tests.waiting import free_port, until

M = 60_000
H = 60 * M
DAY = 24 * H
NOW = 1_767_225_600_000 + 9 * H  # 2026-01-01 09:00 UTC
HOOK = "/services/T000/B000/hook-secret-XYZ"
PING = "/ping/6f1c-secret-uuid"


@pytest.fixture(autouse=True)
def _test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEKEEP_TEST_JOBS", "1")


Make = Callable[..., tuple[Runtime, dict[str, JobSpec]]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Runtime] = []

    def factory(clock: FakeClock, raw: dict[str, Any], node: str = "n1",
                sources: dict[str, Any] | None = None) -> tuple[Runtime, dict[str, JobSpec]]:
        cfg = parse_config({"data_dir": "data", **raw}, str(tmp_path / "candlekeep.yaml"),
                           tmp_path)
        rt = Runtime(cfg, clock=clock, node=node, sources=sources)
        made.append(rt)
        return rt, {s.name: s for s in load_jobs(cfg)}

    yield factory
    for rt in made:
        await rt.aclose()


def succeeding(spec: JobSpec) -> JobSpec:
    """The same job, succeeding this time."""
    noop = get_job_type("noop")
    assert noop is not None
    return dataclasses.replace(spec, job_type=noop, params=Params())


def posted(server: HttpServer, path: str = HOOK) -> list[dict[str, Any]]:
    return [json.loads(h.body) for h in server.at(path)]


def hook(server: HttpServer, fmt: str = "json") -> dict[str, Any]:
    return {"type": "webhook", "url": server.url(HOOK), "format": fmt, "timeout": "5s"}


# -- job rules ---------------------------------------------------------------------------


async def test_job_failed_is_sent_after_the_retries_only(make: Make,
                                                         http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "jobs": [{"name": "fetch", "type": "fail", "params": {"message": "exchange said no"},
                  "retries": {"attempts": 2, "backoff": "1s"}}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "job_failed", "channels": ["hook"]}]}})
    spec = specs["fetch"]
    # A retry in progress is no failure yet.
    waiting = RunOutcome("fetch", RunStatus.WAITING, None, "RuntimeError: exchange said no",
                         1, 1, NOW, NOW)
    await AlertEngine.for_runtime(rt).after_run(waiting, spec)
    assert http_server.hits == []

    task = asyncio.ensure_future(run_now(rt, spec))
    await until(lambda: clock.sleepers >= 2, "the retry's backoff")  # heartbeat + backoff
    assert http_server.hits == []  # the first attempt failed: nothing told yet
    await clock.advance(2)
    out = await task
    assert out.status is RunStatus.FAILED and out.attempts == 2
    (alert,) = posted(http_server)
    assert alert["rule"] == "job_failed" and alert["state"] == "firing"
    assert alert["title"] == "job fetch failed after 2 attempts"
    assert alert["time_ms"] == out.finished_at and alert["time"].startswith("2026-01-01T09:00:0")
    (one,) = alert["alerts"]
    assert one["key"] == "job_failed:fetch"
    subject = one["subject"]
    assert subject["run_id"] == out.run_id and subject["attempts"] == 2
    assert subject["node"] == "n1" and subject["status"] == "failed"
    assert "exchange said no" in subject["error"]
    assert "candlekeep history fetch" in alert["text"]
    assert f"Run: {out.run_id} (attempt 2)" in alert["text"]


async def test_repeats_are_limited_and_one_recovery_is_sent(
        make: Make, http_server: HttpServer, mail_server: MailFactory) -> None:
    mail = await mail_server("starttls")
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "smtp": mail.smtp_config(),
        "api": {"listen": "127.0.0.1:8765"},
        "jobs": [{"name": "ingest.1m", "type": "fail",
                  "params": {"message": "bad reply <script>alert(1)</script> & more"}}],
        "alerts": {"channels": {"ops": {"type": "email", "to": ["ops@example.org"]},
                                "chat": hook(http_server, "slack")},
                   "rules": [{"on": "job_failed", "channels": ["ops", "chat"]}]}})
    failing = specs["ingest.1m"]
    ok = succeeding(failing)

    async def at(minute: int, spec: JobSpec) -> RunOutcome:
        clock.set(NOW + minute * M)
        return await run_now(rt, spec)

    def sent() -> tuple[int, int]:
        return len(mail.messages), len(http_server.hits)

    assert (await at(0, ok)).status is RunStatus.SUCCESS
    assert sent() == (0, 0)  # nothing to recover from: no message
    first = await at(1, failing)
    assert first.status is RunStatus.FAILED and sent() == (1, 1)
    await at(2, failing)
    assert sent() == (1, 1)  # within repeat_every (1h)
    await at(62, failing)
    assert sent() == (2, 2)  # an hour after the last message: again
    back = await at(63, ok)
    assert sent() == (3, 3)
    await at(64, ok)
    assert sent() == (3, 3)  # one recovery only
    await at(65, failing)
    assert sent() == (4, 4)  # a new incident is told at once

    # the e-mail: subject, a text part and an HTML part with the error escaped
    mail1 = mail.messages[0]
    assert mail1["Subject"] == "[candlekeep] job ingest.1m failed"
    assert mail1["To"] == "ops@example.org" and mail.tls and all(mail.tls)
    assert mail.logins and mail.envelopes[0].rcpt_tos == ["ops@example.org"]
    text = mail1.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = mail1.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "bad reply <script>alert(1)</script> & more" in text
    assert f"Run: {first.run_id} (attempt 1)" in text and "Node: n1" in text
    assert "Time: 2026-01-01 09:01:00 UTC" in text
    assert "candlekeep history ingest.1m" in text and "http://127.0.0.1:8765/" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<script>" not in page
    recovery = mail.messages[2]
    assert recovery["Subject"] == "[candlekeep] job ingest.1m recovered"
    body = recovery.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "failing since 2026-01-01 09:01:00 UTC" in body and f"Run: {back.run_id}" in body
    # Slack: one readable message, its control characters escaped
    slack = [json.loads(h.body) for h in http_server.hits]
    assert list(slack[0]) == ["text"]
    assert slack[0]["text"].startswith("\U0001F534 *job ingest.1m failed*\n")
    assert "&lt;script&gt;" in slack[0]["text"] and "<script>" not in slack[0]["text"]
    assert "job ingest.1m recovered" in slack[2]["text"]


async def test_an_alert_whose_repeat_failed_still_gets_its_recovery(
        make: Make, http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "job_failed", "channels": ["hook"]}]}})
    failing = specs["ingest"]
    await run_now(rt, failing)  # announced
    http_server.status = {HOOK: 503}
    clock.set(NOW + 2 * H)
    await run_now(rt, failing)  # its repeat is refused: released, the alert stays announced
    http_server.status = {}
    clock.set(NOW + 2 * H + M)
    back = await run_now(rt, succeeding(failing))
    clock.set(NOW + 2 * H + 2 * M)
    await run_now(rt, succeeding(failing))
    assert [(h.path, json.loads(h.body)["state"]) for h in http_server.hits] == [
        (HOOK, "firing"), (HOOK, "firing"), (HOOK, "resolved")]
    recovery = posted(http_server)[2]
    assert recovery["alerts"][0]["subject"]["run_id"] == back.run_id
    assert "failing since 2026-01-01 09:00:0" in recovery["text"]


async def test_a_mail_server_that_has_the_message_but_never_says_so_gets_it_once(
        make: Make, mail_server: MailFactory, caplog: pytest.LogCaptureFixture) -> None:
    mail = await mail_server("none", hold=True)
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "smtp": mail.smtp_config(timeout="1s"),
        "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"ops": {"type": "email", "to": ["ops@example.org"]}},
                   "rules": [{"on": "job_failed", "channels": ["ops"]}]}})
    await run_now(rt, specs["ingest"])
    assert len(mail.messages) == 1
    clock.set(NOW + M)
    await run_now(rt, specs["ingest"])
    # it may have been delivered: the alert counts as told, so no second copy
    assert len(mail.messages) == 1
    (line,) = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert "channel=ops" in line and "may have been delivered" in line
    assert f"127.0.0.1:{mail.port} gave no answer within 1s" in line
    with rt.state.engine.connect() as conn:
        row = conn.execute(sa.select(o.alert_state)).one()
    assert row.state == "firing" and row.sent == 1 and row.last_sent_at is not None


async def test_a_silent_mail_server_is_given_up_on_and_tried_again(
        make: Make, silent_server: SilentServer, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "smtp": {"host": "127.0.0.1", "port": silent_server.port, "security": "none",
                 "from": "ck@example.org", "timeout": "500ms"},
        "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"ops": {"type": "email", "to": ["ops@example.org"]}},
                   "rules": [{"on": "job_failed", "channels": ["ops"]}]}})
    out = await run_now(rt, specs["ingest"])
    assert out.status is RunStatus.FAILED and out.recorded
    (line,) = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert f"127.0.0.1:{silent_server.port} gave no answer within 0.5s" in line
    assert "may have been" not in line  # it never got as far as the message
    assert silent_server.connections == 1
    clock.set(NOW + M)
    await run_now(rt, specs["ingest"])
    assert silent_server.connections == 2  # nothing was delivered: tried again


@pytest.mark.parametrize(("listen", "link"), [
    ("127.0.0.1:8765", "http://127.0.0.1:8765/"),
    ("[::1]:8765", "http://[::1]:8765/"),
    ("0.0.0.0:8765", f"http://{socket.getfqdn()}:8765/"),
    ("[::]:9000", f"http://{socket.getfqdn()}:9000/"),
    (None, None),
])
async def test_the_dashboard_link_is_one_to_browse_to(
        make: Make, http_server: HttpServer, listen: str | None, link: str | None) -> None:
    clock = FakeClock(NOW)
    api = {"api": {"listen": listen, "token": "tok-123456"}} if listen else {}
    rt, specs = make(clock, {
        **api, "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "job_failed", "channels": ["hook"]}]}})
    await run_now(rt, specs["ingest"])
    (alert,) = posted(http_server)
    hint = alert["text"].rsplit("\n\n", 1)[1]
    assert hint == "More: candlekeep history ingest" + (f"; dashboard: {link}" if link else "")


@pytest.mark.parametrize("security", ["ssl", "none"])
async def test_email_over_implicit_tls_with_login_or_plain(
        make: Make, mail_server: MailFactory, security: str) -> None:
    mail = await mail_server(security)
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "smtp": mail.smtp_config(),
        "jobs": [{"name": "flush", "type": "fail"}],
        "alerts": {"channels": {"ops": {"type": "email", "to": ["a@example.org",
                                                               "b@example.org"]}},
                   "rules": [{"on": "job_failed", "channels": ["ops"]}]}})
    await run_now(rt, specs["flush"])
    (sent,) = mail.messages
    assert sent["Subject"] == "[candlekeep] job flush failed"
    assert sent["From"] == "candlekeep@example.org"
    assert mail.envelopes[0].rcpt_tos == ["a@example.org", "b@example.org"]
    assert len(mail.logins) == (1 if security == "ssl" else 0)


async def test_consecutive_failures_fire_at_exactly_n(make: Make,
                                                      http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "jobs": [{"name": "sync", "type": "fail"}, {"name": "other", "type": "fail"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "consecutive_failures", "count": 3, "channels": ["hook"],
                              "jobs": ["sync"], "repeat_every": "10m"}]}})
    sync = specs["sync"]
    minute = 0

    async def run(spec: JobSpec) -> None:
        nonlocal minute
        minute += 1
        clock.set(NOW + minute * M)
        await run_now(rt, spec)

    await run(sync)
    await run(sync)
    await run(specs["other"])  # another job's failures are not this job's streak
    assert posted(http_server) == []
    await run(sync)
    (alert,) = posted(http_server)
    assert alert["title"] == "job sync failed 3 times in a row"
    assert alert["alerts"][0]["key"] == "consecutive_failures:3:sync"
    await run(sync)
    assert len(posted(http_server)) == 1  # still failing, within repeat_every
    await run(succeeding(sync))
    assert [a["state"] for a in posted(http_server)] == ["firing", "resolved"]
    await run(sync)
    await run(sync)
    assert len(posted(http_server)) == 2  # two in a row since the success
    await run(sync)
    assert [a["state"] for a in posted(http_server)] == ["firing", "resolved", "firing"]


async def test_heartbeats_ping_after_success_and_fail_after_failure(
        make: Make, http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "jobs": [{"name": "ingest", "type": "fail"}, {"name": "quiet", "type": "noop"}],
        "alerts": {"channels": {"hc": {"type": "heartbeat", "url": http_server.url(PING),
                                       "jobs": ["ingest"]}}}})
    await run_now(rt, succeeding(specs["ingest"]))
    clock.set(NOW + M)
    await run_now(rt, succeeding(specs["ingest"]))  # no dedupe: every run pings
    clock.set(NOW + 2 * M)
    failed = await run_now(rt, specs["ingest"])
    clock.set(NOW + 3 * M)
    await run_now(rt, specs["quiet"])  # not a watched job
    assert [(h.method, h.path) for h in http_server.hits] == [
        ("POST", PING), ("POST", PING), ("POST", PING + "/fail")]
    fail_body = http_server.hits[2].body.decode()
    assert f"run {failed.run_id}" in fail_body and "failed on purpose" in fail_body


async def test_failing_channels_never_fail_the_job_and_hide_their_secrets(
        make: Make, http_server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    http_server.status = {HOOK: 500, PING: 500}
    port = free_port()
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "smtp": {"host": "127.0.0.1", "port": port, "security": "starttls",
                 "username": "alerts", "password": SMTP_PASSWORD, "from": "ck@example.org",
                 "timeout": "5s"},
        "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"mail": {"type": "email", "to": ["ops@example.org"]},
                                "chat": hook(http_server),
                                "hc": {"type": "heartbeat", "url": http_server.url(PING),
                                       "jobs": ["ingest"]}},
                   "rules": [{"on": "job_failed", "channels": ["mail", "chat"]}]}})
    spec = specs["ingest"]
    ok = await run_now(rt, succeeding(spec))
    assert ok.status is RunStatus.SUCCESS and ok.recorded
    failed = await run_now(rt, spec)
    assert failed.status is RunStatus.FAILED and failed.recorded
    with rt.state.engine.connect() as conn:
        statuses = conn.execute(sa.select(t.runs.c.status).order_by(t.runs.c.id)).scalars()
        assert list(statuses) == ["success", "failed"]
    assert len(http_server.at(HOOK)) == 1 and len(http_server.at(PING)) == 1
    logged = caplog.text
    assert "alert not delivered channel=mail" in logged and f"127.0.0.1:{port}" in logged
    assert "alert not delivered channel=chat" in logged and "HTTP 500" in logged
    assert "heartbeat not delivered channel=hc" in logged
    for secret in (HOOK, "hook-secret-XYZ", PING, "secret-uuid", SMTP_PASSWORD):
        assert secret not in logged
    # Nothing was delivered, so nothing counts as told: the next failure tries again.
    http_server.status = {}
    clock.set(NOW + M)
    await run_now(rt, spec)
    assert len(http_server.at(HOOK)) == 2
    assert posted(http_server)[1]["state"] == "firing"


async def test_a_silent_webhook_is_cut_off_by_its_timeout(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        "jobs": [{"name": "ingest", "type": "fail"}],
        "alerts": {"channels": {"chat": {"type": "webhook", "timeout": "200ms",
                                         "url": f"http://127.0.0.1:{port}{HOOK}"}},
                   "rules": [{"on": "job_failed", "channels": ["chat"]}]}})
    try:
        out = await run_now(rt, specs["ingest"])
    finally:
        server.close()
        await server.wait_closed()
    assert out.status is RunStatus.FAILED and out.recorded
    (line,) = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert "channel=chat" in line and "no answer within 0.2s" in line and HOOK not in line


async def test_two_nodes_on_one_postgres_send_one_message(
        make: Make, http_server: HttpServer, pg_url: str) -> None:
    clock = FakeClock(int(time.time() * 1000))  # leases are the database's clock there
    raw = {"state": pg_url,
           "jobs": [{"name": "ingest", "type": "fail", "max_concurrent": 2}],
           "alerts": {"channels": {"hook": hook(http_server)},
                      "rules": [{"on": "job_failed", "channels": ["hook"]}]}}
    a, specs = make(clock, raw, node="a")
    b, _ = make(clock, raw, node="b")
    spec = specs["ingest"]
    outs = await asyncio.gather(run_now(a, spec), run_now(b, spec))
    assert [o.status for o in outs] == [RunStatus.FAILED, RunStatus.FAILED]
    assert outs[0].run_id != outs[1].run_id
    assert len(posted(http_server)) == 1
    # and both engines told of the very same failure at once still send one
    clock.set(clock.now_ms() + 2 * H)
    await asyncio.gather(AlertEngine.for_runtime(a).after_run(outs[0], spec),
                         AlertEngine.for_runtime(b).after_run(outs[0], spec))
    assert len(posted(http_server)) == 2
    with a.state.engine.connect() as conn:
        row = conn.execute(sa.select(o.alert_state)).one()
    assert row.key == "job_failed:ingest" and row.sent == 2 and row.state == "firing"


# -- freshness and gaps --------------------------------------------------------------------


def sim_raw() -> dict[str, Any]:
    return {"stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": {"sim": {"type": "sim", "seed": 7}},
            "series": [{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"],
                        "timeframes": ["1m"], "start": NOW // DAY * DAY - 6 * H}]}


def sim_sources(clock: FakeClock) -> dict[str, Any]:
    ex = SimExchange(7, {"BTC/USDT": "2017-08-17", "ETH/USDT": "2017-08-17"}, clock=clock,
                     holes=None, transient=None)
    return {"sim": SimSource("sim", exchange=ex, clock=clock)}


async def fetch(rt: Runtime, job: str, **params: Any) -> None:
    attempt = await execute_attempt(rt, adhoc_spec(job, build_params(job, params)),
                                    asyncio.Event())
    assert attempt.status is RunStatus.SUCCESS, attempt.error


async def test_freshness_alerts_on_stale_and_missing_and_recovers_once(
        make: Make, http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        **sim_raw(),
        "jobs": [{"name": "fresh", "type": "freshness"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "freshness", "channels": ["hook"], "repeat_every": "6h"}]},
    }, sources=sim_sources(clock))
    fresh = specs["fresh"]
    await fetch(rt, "backfill", symbol="BTC/USDT")
    assert (await run_now(rt, fresh)).status is RunStatus.SUCCESS
    (missing,) = posted(http_server)
    assert missing["state"] == "firing"
    assert [a["key"] for a in missing["alerts"]] == ["freshness:main:sim:ETH/USDT:1m"]
    assert missing["title"] == "series sim:ETH/USDT:1m in main is missing"
    assert missing["alerts"][0]["subject"]["status"] == "missing"

    clock.set(NOW + 2 * H)  # BTC/USDT 1m is far past 3 candles + 5 min now
    await run_now(rt, fresh)
    stale = posted(http_server)[1]
    assert [a["key"] for a in stale["alerts"]] == ["freshness:main:sim:BTC/USDT:1m"]
    assert stale["title"] == "series sim:BTC/USDT:1m in main is stale"
    assert "age 2h00m" in stale["text"] and "allowed 8m00s" in stale["text"]

    await fetch(rt, "ingest", symbol="BTC/USDT")
    clock.set(NOW + 2 * H + M)
    await run_now(rt, fresh)
    recovered = posted(http_server)[2]
    assert recovered["state"] == "resolved"
    assert recovered["title"] == "series sim:BTC/USDT:1m in main is fresh again"
    assert [a["key"] for a in recovered["alerts"]] == ["freshness:main:sim:BTC/USDT:1m"]
    clock.set(NOW + 2 * H + 2 * M)
    await run_now(rt, fresh)
    assert len(posted(http_server)) == 3  # one recovery; ETH still within its 6h


async def test_freshness_alerts_when_a_store_cannot_be_read(
        make: Make, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    shared = Reader.freshness

    def freshness(reader: Reader) -> Any:  # the read model's own query, counted
        reads.append(1)
        return shared(reader)

    monkeypatch.setattr(Reader, "freshness", freshness)
    clock = FakeClock(NOW)
    raw = sim_raw()
    raw["stores"]["remote"] = {"type": "postgresql",
                               "dsn": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    raw["series"].append({"source": "sim", "symbols": ["SOL/USDT"], "timeframes": ["1h"],
                          "start": NOW // DAY * DAY - 6 * H, "store": "remote"})
    rt, specs = make(clock, {
        **raw, "jobs": [{"name": "fresh", "type": "freshness"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "freshness", "channels": ["hook"]}]},
    }, sources=sim_sources(clock))
    await fetch(rt, "backfill", symbol="BTC/USDT")
    await fetch(rt, "backfill", symbol="ETH/USDT")
    assert (await run_now(rt, specs["fresh"])).status is RunStatus.SUCCESS
    (alert,) = posted(http_server)
    assert alert["state"] == "firing" and reads == [1]
    assert [a["key"] for a in alert["alerts"]] == ["freshness:remote:sim:SOL/USDT:1h"]
    assert alert["alerts"][0]["subject"]["status"] == "error"
    assert alert["title"] == "series sim:SOL/USDT:1h in remote is unreadable"
    assert "found data that is unreadable:" in alert["text"]
    assert "remote series sim:SOL/USDT:1h: UNREADABLE, newest unknown" in alert["text"]
    assert "store 'remote'" in alert["text"]  # the store's own error, as the check saw it


async def test_failed_gaps_are_told_once_each_in_one_message(
        make: Make, http_server: HttpServer) -> None:
    clock = FakeClock(NOW)
    rt, specs = make(clock, {
        **sim_raw(),
        "jobs": [{"name": "repair", "type": "gaps_repair"}],
        "alerts": {"channels": {"hook": hook(http_server)},
                   "rules": [{"on": "gap_failed", "channels": ["hook"],
                              "repeat_every": "1m"}]},
    }, sources=sim_sources(clock))
    repair = specs["repair"]

    def failed_gap(symbol: str, start: int) -> None:
        with rt.state.engine.begin() as conn:
            conn.execute(t.gaps.insert().values(
                source="sim", symbol=symbol, timeframe="1m", gap_start=start,
                gap_end=start + 9 * M, detected_at=NOW - H, status="failed", attempts=5,
                last_error="HTTP 502 from the exchange"))

    failed_gap("BTC/USDT", NOW - 3 * H)
    failed_gap("ETH/USDT", NOW - 2 * H)
    assert (await run_now(rt, repair)).status is RunStatus.SUCCESS
    (first,) = posted(http_server)
    assert first["title"] == "2 gaps could not be repaired"
    assert [a["key"] for a in first["alerts"]] == [
        f"gap_failed:sim:BTC/USDT:1m:{NOW - 3 * H}", f"gap_failed:sim:ETH/USDT:1m:{NOW - 2 * H}"]
    assert "sim BTC/USDT 1m: 2026-01-01 06:00:00 → 2026-01-01 06:09:00 UTC, 5 attempts; " \
           "last error: HTTP 502 from the exchange" in first["text"]
    failed_gap("BTC/USDT", NOW - H)
    clock.set(NOW + H)  # past repeat_every: gaps are told once all the same
    await run_now(rt, repair)
    second = posted(http_server)[1]
    assert second["title"] == "1 gap could not be repaired"
    assert [a["key"] for a in second["alerts"]] == [f"gap_failed:sim:BTC/USDT:1m:{NOW - H}"]
    clock.set(NOW + 2 * H)
    await run_now(rt, repair)
    assert len(posted(http_server)) == 2
