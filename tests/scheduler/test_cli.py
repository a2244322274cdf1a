"""The scheduler's commands, in-process (the daemon itself is exercised in
test_daemon_process.py)."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

import candlekeep.config as config_mod
from candlekeep.cli.main import app
from candlekeep.scheduler.install import CRON_BEGIN, CRON_END, merge_crontab
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from candlekeep.state.ops_tables import alert_state
from candlekeep.state.scheduler_tables import scheduler_nodes

runner = CliRunner()

JOBS: list[dict[str, Any]] = [
    {"name": "beat", "type": "noop", "schedule": "* * * * *"},
    {"name": "report", "type": "command", "schedule": "0 8 * * 1-5",
     "timezone": "Europe/Berlin", "params": {"argv": ["sh", "-c", "echo report"]}},
    {"name": "broken", "type": "fail", "schedule": "*/5 * * * *",
     "params": {"message": "no route to exchange"}},
    {"name": "adhoc", "type": "noop"},
    {"name": "off", "type": "noop", "schedule": "@daily", "enabled": False},
]


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CANDLEKEEP_TEST_JOBS", "1")
    (tmp_path / "data").mkdir()
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "jobs": JOBS}))
    return path


def invoke(cfg: Path, *args: str) -> Any:
    return runner.invoke(app, ["--config", str(cfg), *args])


def state(cfg: Path) -> StateDB:
    return StateDB(f"sqlite:///{cfg.parent / 'data' / 'state.db'}")


def test_run_records_history_and_dry_run_records_nothing(cfg: Path) -> None:
    out = invoke(cfg, "run", "report", "--json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["status"] == "success" and res["details"]["stdout_tail"] == ["report"]
    dry = invoke(cfg, "run", "report", "--dry-run")
    assert dry.exit_code == 0 and "would run" in dry.stdout
    rows = state(cfg).list_runs()
    assert [(r.job, r.trigger, r.status) for r in rows] == [("report", "manual", "success")]


def test_a_failing_run_exits_1_and_keeps_its_error(cfg: Path) -> None:
    out = invoke(cfg, "run", "broken")
    assert out.exit_code == 1
    assert "no route to exchange" in out.stdout
    hist = json.loads(invoke(cfg, "history", "--status", "failed", "--json").stdout)
    assert [h["job"] for h in hist] == ["broken"]
    assert hist[0]["error"] == "RuntimeError: no route to exchange"
    assert hist[0]["attempt"] == 1 and hist[0]["node"]


def test_run_refuses_a_job_running_elsewhere_unless_forced(cfg: Path) -> None:
    db = state(cfg)
    now = int(time.time() * 1000)
    beat = next(s for s in load_jobs(config_mod.load_config(cfg)) if s.name == "beat")
    elsewhere = SchedulerStore(db, Owner("other-node", "far-host/1/x", 15_000))
    elsewhere.start_manual(beat, now)
    out = invoke(cfg, "run", "beat")
    assert out.exit_code == 2 and "running now" in out.output
    assert invoke(cfg, "run", "beat", "--force").exit_code == 0


def test_unknown_job_and_bad_config_are_clear_errors(cfg: Path, tmp_path: Path) -> None:
    out = invoke(cfg, "run", "nope")
    assert out.exit_code == 2 and "unknown job 'nope'" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"jobs": [{"name": "x", "type": "noop",
                                             "schedule": "*/5 * *"}]}))
    out = runner.invoke(app, ["--config", str(bad), "list"])
    assert out.exit_code == 2
    assert "jobs[0].schedule" in out.output and "3 fields" in out.output


def test_list_json_shows_schedule_words_next_run_last_run_and_health(cfg: Path) -> None:
    invoke(cfg, "run", "beat")
    invoke(cfg, "run", "broken")
    out = invoke(cfg, "list", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    jobs = {j["name"]: j for j in data["jobs"]}
    assert jobs["beat"]["schedule_words"] == "every minute"
    assert jobs["beat"]["last_status"] == "success" and jobs["beat"]["success_rate_7d"] == 1
    assert jobs["beat"]["next_run"] % 60_000 == 0
    assert jobs["report"]["schedule_words"] == "at 08:00 on weekdays (Europe/Berlin)"
    assert jobs["adhoc"]["next_run"] is None and jobs["off"]["next_run"] is None
    health = data["health"]
    assert health["daemon_up"] is False and health["failing_jobs"] == ["broken"]
    assert health["state_db_ms"] >= 0 and health["open_gaps"] == 0
    assert "stale_series" not in health  # status shows it: it reads every store
    table = invoke(cfg, "jobs")  # the alias, as a table with the banner on top
    assert table.exit_code == 0
    assert "daemon down" in table.stdout and "failing: broken" in table.stdout


def test_status_when_not_running(cfg: Path) -> None:
    out = invoke(cfg, "status", "--json")
    data = json.loads(out.stdout)
    assert data["running"] is False and data["pid"] is None
    assert len(data["next_ticks"]) == 5 and data["next_ticks"][0]["job"] == "beat"
    assert invoke(cfg, "stop").stdout.strip() == "no daemon is running"


def test_slo_counts_missed_ticks_as_failures(cfg: Path) -> None:
    db = state(cfg)
    specs = load_jobs(config_mod.load_config(cfg))
    store = SchedulerStore(db, Owner("n1", "n1/1/x", 15_000))
    now = int(time.time() * 1000)
    start = now // 60_000 * 60_000 - 60 * 60_000
    store.ensure_jobs(specs, start)
    # 60 ticks due for "beat" since registration; 45 succeeded, 5 failed, 10 never ran.
    with db.engine.begin() as conn:
        conn.execute(t.runs.insert(), [
            {"job": "beat", "scheduled_for": start + k * 60_000, "attempt": 1, "node": "n1",
             "trigger": "schedule", "started_at": start + k * 60_000,
             "finished_at": start + k * 60_000 + 10, "rows_written": 0, "requests": 0,
             "status": "success" if k <= 45 else "failed"} for k in range(1, 51)])
    out = invoke(cfg, "slo", "--json", "--target", "0.7")
    assert out.exit_code == 1  # "broken" never ran: its target is not met
    rows = {r["job"]: r for r in json.loads(out.stdout)}
    beat = rows["beat"]
    assert beat["expected_ticks"] in (60, 61) and beat["succeeded"] == 45
    assert beat["missed"] == beat["expected_ticks"] - 45 and beat["met"] is True
    assert rows["broken"]["met"] is False and rows["broken"]["expected_ticks"] == 12
    strict = json.loads(invoke(cfg, "slo", "--json", "--target", "0.9").stdout)
    assert next(r for r in strict if r["job"] == "beat")["met"] is False


def test_install_systemd_daemon_unit_uses_absolute_paths(cfg: Path) -> None:
    out = invoke(cfg, "install", "systemd")
    assert out.exit_code == 0, out.output
    assert f"ExecStart={Path(sys.executable).absolute()} -m candlekeep --config {cfg}" \
        f" start" in out.stdout
    assert "candlekeep.service" in out.stdout


def test_install_systemd_timers_one_per_enabled_scheduled_job(cfg: Path,
                                                              tmp_path: Path) -> None:
    dest = tmp_path / "units"
    out = invoke(cfg, "install", "systemd", "--per-job", "--write", "--dir", str(dest))
    assert out.exit_code == 0, out.output
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["candlekeep-beat.service", "candlekeep-beat.timer",
                     "candlekeep-broken.service", "candlekeep-broken.timer",
                     "candlekeep-report.service", "candlekeep-report.timer"]
    timer = (dest / "candlekeep-report.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 08:00:00 Europe/Berlin" in timer
    service = (dest / "candlekeep-report.service").read_text()
    assert f"--config {cfg} run report" in service
    assert "StandardOutput=append:" in service and "jobs/report.log" in service
    if shutil.which("systemd-analyze"):
        for t in dest.glob("*.timer"):
            cal = next(line.split("=", 1)[1] for line in t.read_text().splitlines()
                       if line.startswith("OnCalendar="))
            check = subprocess.run(["systemd-analyze", "calendar", cal], capture_output=True,
                                   text=True)
            assert check.returncode == 0, (cal, check.stderr)


def test_install_launchd_plists_parse(cfg: Path) -> None:
    out = invoke(cfg, "install", "launchd", "--per-job")
    assert out.exit_code == 0, out.output
    docs = [chunk.split("\n", 1)[1].strip() for chunk in out.stdout.split("# ---- ")[1:]]
    plists = [plistlib.loads(d.split("\n# then:")[0].encode()) for d in docs]
    by_label = {p["Label"]: p for p in plists}
    beat = by_label["org.candlekeep.job.beat"]
    assert beat["ProgramArguments"][-3:] == ["run", "beat", "--timer"]
    assert beat["StartCalendarInterval"] == [{}]
    broken = by_label["org.candlekeep.job.broken"]
    assert len(broken["StartCalendarInterval"]) == 12
    daemon = plistlib.loads(invoke(cfg, "install", "launchd").stdout.split("\n", 1)[1]
                            .split("\n# then:")[0].encode())
    assert daemon["ProgramArguments"][-1] == "start" and daemon["RunAtLoad"] is True


def test_install_crontab_lines_and_merge(cfg: Path) -> None:
    out = invoke(cfg, "install", "crontab")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == CRON_BEGIN and lines[-1] == CRON_END
    beat = next(line for line in lines if line.endswith("beat.log 2>&1"))
    assert beat.startswith("* * * * * cd ")
    assert f"{Path(sys.executable).absolute()} -m candlekeep --config {cfg} run beat" in beat
    assert "CRON_TZ=Europe/Berlin" in lines and "CRON_TZ=UTC" in lines  # no inline comments
    assert not any(" off " in line or "run adhoc" in line for line in lines)
    merged = merge_crontab("MAILTO=me\n0 1 * * * backup\n" + out.stdout, out.stdout)
    assert merged.count(CRON_BEGIN) == 1 and merged.startswith("MAILTO=me\n0 1 * * * backup")


def test_slo_counts_runs_started_by_installed_timers(cfg: Path) -> None:
    """``install crontab`` lines call ``candlekeep run``; those runs are the job's ticks."""
    import shlex

    block = invoke(cfg, "install", "crontab").stdout
    line = next(x for x in block.splitlines() if x.startswith("* * * * * ") and " beat " in
                f"{x} ")
    command = line.split(" && ", 2)[2].split(" >> ", 1)[0]
    done = subprocess.run(shlex.split(command), capture_output=True, text=True,
                          env={**os.environ, "CANDLEKEEP_TEST_JOBS": "1"}, timeout=60)
    assert done.returncode == 0, done.stderr
    (run,) = state(cfg).list_runs(job="beat")
    assert run.status == "success" and run.scheduled_for % 60_000 == 0
    beat = next(r for r in json.loads(invoke(cfg, "slo", "--json").stdout)
                if r["job"] == "beat")
    assert beat["succeeded"] == 1 and beat["expected_ticks"] in (1, 2)


def test_slo_of_a_job_no_daemon_has_seen_yet_charges_no_missed_ticks(cfg: Path) -> None:
    rows = {r["job"]: r for r in json.loads(invoke(cfg, "slo", "--json").stdout)}
    assert rows["beat"]["expected_ticks"] == 0 and rows["beat"]["missed"] == 0
    assert rows["beat"]["share"] is None and rows["beat"]["met"] is None


def test_prune_deletes_old_history_but_never_live_runs(cfg: Path) -> None:
    db = state(cfg)
    now = int(time.time() * 1000)
    day = 86_400_000
    rows = [("old", now - 40 * day, "success"), ("old", now - 39 * day, "skipped"),
            ("new", now - 2 * day, "failed"), ("live", now - 90 * day, "running"),
            ("retry", now - 90 * day, "waiting")]
    with db.engine.begin() as conn:
        conn.execute(t.runs.insert(), [
            {"job": job, "scheduled_for": at, "attempt": 1, "node": "n", "trigger": "schedule",
             "status": status, "started_at": at,
             "finished_at": None if status in ("running", "waiting") else at + 5,
             "rows_written": 0, "requests": 0} for job, at, status in rows])
        conn.execute(scheduler_nodes.insert(), [
            {"node": "gone", "host": "h", "pid": 1, "started_at": now - 60 * day,
             "heartbeat_at": now - 60 * day, "status": "dead", "lease_ms": 15_000},
            {"node": "here", "host": "h", "pid": 2, "started_at": now - 60 * day,
             "heartbeat_at": now, "status": "running", "lease_ms": 15_000}])
        conn.execute(alert_state.insert(), [
            {"key": "job_failed:old", "rule": "job_failed", "state": "resolved",
             "first_at": now - 50 * day, "last_sent_at": now - 50 * day, "sent": 1,
             "resolved_at": now - 45 * day},
            {"key": "freshness:main:gone", "rule": "freshness", "state": "firing",
             "first_at": now - 60 * day, "last_sent_at": now - 35 * day, "sent": 9,
             "resolved_at": None},
            {"key": "job_failed:recent", "rule": "job_failed", "state": "resolved",
             "first_at": now - 50 * day, "last_sent_at": now - 50 * day, "sent": 1,
             "resolved_at": now - 3 * day},
            {"key": "freshness:main:firing", "rule": "freshness", "state": "firing",
             "first_at": now - 60 * day, "last_sent_at": now - day, "sent": 40,
             "resolved_at": None}])
    plan = json.loads(invoke(cfg, "prune", "--keep", "30d", "--dry-run", "--json").stdout)
    assert plan == {"dry_run": True, "runs": 1, "skipped": 1, "nodes": 1, "alerts": 2}
    assert len(db.list_runs(limit=None)) == 5
    done = invoke(cfg, "prune", "--keep", "30d")
    assert done.exit_code == 0 and "deleted: 1 runs, 1 skipped-tick rows, 1 node rows, " \
        "2 alerts" in done.stdout
    assert sorted(r.job for r in db.list_runs(limit=None)) == ["live", "new", "retry"]
    with db.engine.connect() as conn:
        kept = sorted(conn.execute(sa.select(alert_state.c.key)).scalars())
    assert kept == ["freshness:main:firing", "job_failed:recent"]
    bad = invoke(cfg, "prune", "--keep", "soon")
    assert bad.exit_code == 2 and "--keep" in bad.output
