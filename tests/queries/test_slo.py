"""``candlekeep slo``: objectives from the job, its type or the default, counted against run
history recorded through the scheduler's own API (claims by timer, finishes, retries,
skips) on real SQLite and PostgreSQL state DBs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from candlekeep.cli.main import app
from candlekeep.config.models import Config, SloConfig
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.registry import register
from candlekeep.queries.slo import Basis, SloSource, SloView, slo_views
from candlekeep.scheduler.records import ClaimedRun, Finish, Owner
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state.db import StateDB
from candlekeep.state.statuses import RunStatus, Trigger
from tests.scheduler.helpers import ms

NOW = ms("2025-06-01T00:00:00")
HOUR = 3_600_000
DAY = 86_400_000


class _P(Params):
    pass


async def _noop(ctx: JobContext, p: Any) -> JobResult:
    return JobResult()


# A job type with a default objective, as ``@job_type(..., slo=...)`` declares one.
register(JobType("slo_typed_test", _P, _noop, slo=SloConfig(target=0.5, window=7 * 86400)))

JOBS: list[dict[str, Any]] = [
    {"name": "hourly", "type": "noop", "schedule": "0 * * * *",
     "slo": {"target": 0.9, "window": "1d"}},
    {"name": "typed", "type": "slo_typed_test"},  # manual only, its type's objective
    {"name": "daily", "type": "noop", "schedule": "0 0 * * *"},  # the default objective
    {"name": "fresh", "type": "noop", "schedule": "*/5 * * * *"},  # never registered
    {"name": "adhoc", "type": "noop"},  # manual, no objective: not listed
    {"name": "off", "type": "noop", "schedule": "@daily", "enabled": False},
]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("CANDLEKEEP_TEST_JOBS", "1")
    return Config.model_validate({"data_dir": str(tmp_path / "data"), "jobs": JOBS})


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateDB]:
    url = (f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    state = StateDB(url)
    yield state
    state.dispose()


def _tick(store: SchedulerStore, spec: JobSpec, tick: int, status: RunStatus,
          error: str | None = None, trigger: Trigger = Trigger.TIMER) -> ClaimedRun:
    claimed = store.start_manual(spec, tick, trigger=trigger,
                                 scheduled_for=tick if trigger is Trigger.TIMER else None)
    assert isinstance(claimed, ClaimedRun)
    assert store.finish_many([Finish(claimed.run_id, status, tick + 1_000,
                                     error=error)]) == []
    return claimed


def seed(db: StateDB, specs: list[JobSpec]) -> None:
    store = SchedulerStore(db, Owner("n1", "n1/1/x", 15_000))
    by = {s.name: s for s in specs}
    store.ensure_jobs([by["hourly"], by["typed"]], NOW - 2 * DAY)
    store.ensure_jobs([by["daily"]], NOW - 10 * DAY)
    hourly = by["hourly"]
    _tick(store, hourly, NOW - DAY, RunStatus.FAILED, "outside the window")
    ticks = [NOW - DAY + k * HOUR for k in range(1, 25)]
    for k, tick in enumerate(ticks, start=1):
        if k <= 19:
            _tick(store, hourly, tick, RunStatus.SUCCESS)
        elif k == 20:  # the first attempt fails, its retry succeeds: the tick succeeded
            first = store.start_manual(hourly, tick, trigger=Trigger.TIMER, scheduled_for=tick)
            assert isinstance(first, ClaimedRun)
            retry = store.retry(Finish(first.run_id, RunStatus.FAILED, tick + 500,
                                       error="flaky"), tick, "hourly", 2, Trigger.TIMER,
                                tick + 60_000)
            assert isinstance(retry, int) and store.start_waiting(retry, tick + 60_000)
            assert store.finish_many([Finish(retry, RunStatus.SUCCESS, tick + 70_000)]) == []
        elif k in (21, 22):
            _tick(store, hourly, tick, RunStatus.FAILED, f"RuntimeError: boom {k}")
        elif k == 23:
            store.skip_tick("hourly", tick, tick, "still running")
        # k == 24: nobody ran it
    typed = by["typed"]
    for i, status in enumerate([RunStatus.SUCCESS] * 3 + [RunStatus.FAILED,
                                                          RunStatus.CANCELLED]):
        _tick(store, typed, NOW - DAY + i * HOUR, status, trigger=Trigger.MANUAL)
    _tick(store, typed, NOW - 8 * DAY, RunStatus.FAILED, trigger=Trigger.MANUAL)  # too old
    for d in range(1, 11):
        _tick(store, by["daily"], NOW - 10 * DAY + d * DAY, RunStatus.SUCCESS)


def views(db: StateDB, config: Config, **flags: Any) -> dict[str, SloView]:
    specs = load_jobs(config)
    with db.reader() as reader:
        return {v.job: v for v in slo_views(specs, config, reader, NOW, **flags)}


def test_each_job_against_its_own_objective(db: StateDB, config: Config) -> None:
    seed(db, load_jobs(config))
    got = views(db, config)
    assert list(got) == ["hourly", "typed", "daily", "fresh"]
    h = got["hourly"]
    assert (h.target, h.window_ms, h.set_by, h.basis) == (0.9, DAY, SloSource.JOB, Basis.TICKS)
    assert (h.expected_ticks, h.succeeded, h.failed, h.skipped, h.not_run, h.missed) == (
        24, 20, 2, 1, 1, 4)
    assert h.share == pytest.approx(20 / 24)
    assert (h.allowed_misses, h.budget_left, h.met) == (2, -2, False)
    assert h.last_failure_at == NOW - DAY + 22 * HOUR + 1_000
    assert (h.last_failure_status, h.last_failure_error) == ("failed", "RuntimeError: boom 22")
    t = got["typed"]
    assert (t.target, t.window_ms, t.set_by, t.basis) == (0.5, 7 * DAY, SloSource.JOB_TYPE,
                                                          Basis.RUNS)
    assert (t.expected_ticks, t.succeeded, t.failed, t.skipped) == (4, 3, 1, 1)
    assert (t.allowed_misses, t.budget_left, t.met) == (2, 1, True)
    d = got["daily"]
    assert (d.target, d.window_ms, d.set_by) == (0.95, 30 * DAY, SloSource.DEFAULT)
    assert d.since == NOW - 10 * DAY  # from its first appearance, not the window's start
    assert (d.expected_ticks, d.succeeded, d.met, d.last_failure_at) == (10, 10, True, None)
    f = got["fresh"]
    assert (f.since, f.expected_ticks, f.share, f.met) == (None, 0, None, None)


def test_flags_override_every_objective(db: StateDB, config: Config) -> None:
    seed(db, load_jobs(config))
    got = views(db, config, target=0.8, window_ms=12 * HOUR)
    assert {v.set_by for v in got.values()} == {SloSource.FLAG}
    h = got["hourly"]  # ticks 13..24 of the day: 7 ok, 1 retried ok, 2 failed, 1 skipped, 1 not run
    assert (h.expected_ticks, h.succeeded, h.failed, h.skipped, h.not_run) == (12, 8, 2, 1, 1)
    assert (h.allowed_misses, h.budget_left, h.met) == (2, -2, False)


@pytest.fixture
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CANDLEKEEP_TEST_JOBS", "1")
    (tmp_path / "data").mkdir()
    path = tmp_path / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "jobs": [
        {"name": "typed", "type": "slo_typed_test"},
        {"name": "nightly", "type": "noop", "schedule": "0 3 * * *",
         "slo": {"target": 0.99, "window": "7d"}}]}))
    return path


def test_cli_exits_1_when_an_objective_is_missed(cfg_file: Path) -> None:
    runner = CliRunner()
    db = StateDB(f"sqlite:///{cfg_file.parent / 'data' / 'state.db'}")
    specs = load_jobs(Config.model_validate(yaml.safe_load(cfg_file.read_text())))
    store = SchedulerStore(db, Owner("n1", "n1/1/x", 15_000))
    now = int(time.time() * 1000)  # the CLI reads the wall clock, as list and history do
    typed = next(s for s in specs if s.name == "typed")
    _tick(store, typed, now - HOUR, RunStatus.SUCCESS, trigger=Trigger.MANUAL)
    out = runner.invoke(app, ["--config", str(cfg_file), "slo", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["job"]: r for r in json.loads(out.stdout)}
    assert rows["typed"]["set_by"] == "job_type" and rows["typed"]["met"] is True
    assert rows["nightly"]["met"] is None and rows["nightly"]["since"] is None
    _tick(store, typed, now - HOUR + 1, RunStatus.FAILED, "no route",
          trigger=Trigger.MANUAL)
    _tick(store, typed, now - HOUR + 2, RunStatus.FAILED, "no route again",
          trigger=Trigger.MANUAL)
    text = runner.invoke(app, ["--config", str(cfg_file), "slo"])
    assert text.exit_code == 1
    assert "50.00% / 7d (job_type)" in text.stdout and "33.33%" in text.stdout
    assert "-1 of 1" in text.stdout
    assert "typed: last failure" in text.stdout and "failed: no route again" in text.stdout
    both = runner.invoke(app, ["--config", str(cfg_file), "slo", "--window", "3d",
                               "--days", "3"])
    assert both.exit_code == 2 and "give --window or --days, not both" in both.output
    bad = runner.invoke(app, ["--config", str(cfg_file), "slo", "--window", "soon"])
    assert bad.exit_code == 2 and "30d" in bad.output


def test_each_schedule_period_counts_with_the_schedule_it_had(tmp_path: Path) -> None:
    """An hour every 10 minutes, then an hour every 5: 6 + 12 ticks were due, not 24."""
    from tests.scheduler.helpers import spec

    db = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    store = SchedulerStore(db, Owner("n", "h/1/x", 15_000))
    t0 = NOW - 2 * HOUR
    store.ensure_jobs([spec("j", "*/10 * * * *")], t0)
    now5 = spec("j", "*/5 * * * *")
    store.ensure_jobs([now5], t0 + HOUR)
    for tick in [t0 + k * 600_000 for k in range(1, 7)] + \
            [t0 + HOUR + k * 300_000 for k in range(1, 13)]:
        _tick(store, now5, tick, RunStatus.SUCCESS)
    with db.reader() as reader:
        (v,) = slo_views([now5], Config(), reader, NOW, target=0.99)
    assert (v.expected_ticks, v.succeeded, v.not_run, v.met) == (18, 18, 0, True)
