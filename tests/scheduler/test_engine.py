"""The engine under a fake clock: months of ticks, DST, misfire after downtime, overlap,
retries, timeouts, stop, state DB failures, several nodes on one state DB."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from candlekeep.core.series import SeriesKey
from candlekeep.jobs.base import JobContext, JobResult
from candlekeep.scheduler.engine import Engine
from candlekeep.state import tables as t
from candlekeep.state.rows import RunRow
from tests.scheduler.helpers import (
    Overlap,
    SettlingClock,
    engine,
    ms,
    running,
    runtime,
    settle,
    spec,
)

MIN = 60_000
T0 = ms("2025-01-01T00:00:00")


def runs(eng: Engine, job: str | None = None) -> list[RunRow]:
    return sorted(eng.runtime.state.list_runs(job=job, limit=None),
                  key=lambda r: (r.scheduled_for, r.attempt))


def by_status(rows: list[RunRow], status: str) -> list[int]:
    return [r.scheduled_for for r in rows if r.status == status]


async def test_months_of_daily_ticks_each_run_once_on_time(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    seen: list[int] = []

    async def body(ctx: JobContext) -> None:
        seen.append(ctx.clock.now_ms())

    eng = engine(runtime(tmp_path, clock), [spec("daily", "0 2 * * *", body),
                                            spec("monthly", "0 0 1 * *")],
                 heartbeat_s=6 * 3600)
    async with running(eng):
        await clock.run_until(ms("2025-07-01T00:00:00"))
    daily = runs(eng, "daily")
    assert [r.scheduled_for for r in daily] == [T0 + 2 * 3_600_000 + k * 86_400_000
                                                for k in range(181)]
    assert all(r.status == "success" and r.started_at == r.scheduled_for for r in daily)
    assert seen == [r.scheduled_for for r in daily]
    assert [r.scheduled_for for r in runs(eng, "monthly")] == [
        ms(f"2025-{m:02d}-01T00:00:00") for m in range(2, 8)]


async def test_dst_changes_in_a_non_utc_zone(tmp_path: Path) -> None:
    clock = SettlingClock(ms("2025-03-01T00:00:00"))
    eng = engine(runtime(tmp_path, clock), [
        spec("d", "30 1 * * *", tz="America/New_York"),
        spec("skipped_hour", "30 2 * * *", tz="America/New_York")], heartbeat_s=6 * 3600)
    async with running(eng):
        await clock.run_until(ms("2025-11-15T00:00:00"))
    d = by_status(runs(eng, "d"), "success")
    # Every calendar day once: 01:30 EST (06:30 UTC) in winter, 01:30 EDT (05:30 UTC) in
    # summer; on 2025-11-02 the repeated 01:30 runs once.
    assert len(d) == len(set(d)) == 259
    assert ms("2025-03-09T06:30:00") in d and ms("2025-03-10T05:30:00") in d
    assert ms("2025-11-02T05:30:00") in d and ms("2025-11-02T06:30:00") not in d
    # 02:30 does not exist on 2025-03-09: it runs at the jump, 03:00 EDT (07:00 UTC).
    s = by_status(runs(eng, "skipped_hour"), "success")
    assert len(s) == 259 and ms("2025-03-09T07:00:00") in s


async def test_hourly_job_through_fall_back_keeps_real_hours(tmp_path: Path) -> None:
    clock = SettlingClock(ms("2025-11-01T20:00:00"))
    eng = engine(runtime(tmp_path, clock), [spec("h", "0 * * * *", tz="America/New_York")])
    async with running(eng):
        await clock.run_until(ms("2025-11-02T12:00:00"))
    h = by_status(runs(eng, "h"), "success")
    assert h == list(range(ms("2025-11-01T21:00:00"), ms("2025-11-02T12:00:01"), 3_600_000))


async def _crash(eng: Engine, task: asyncio.Task[None]) -> None:
    """Stop an engine the way kill -9 would: nothing recorded, no drain."""
    async def no_drain() -> None:
        return None

    eng._drain = no_drain  # type: ignore[method-assign]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if eng.host._beater is not None:
        eng.host._beater.cancel()
    eng.host.notify = lambda: None
    runs = list(eng._tasks)
    for run in runs:
        run.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    eng.host._finishes.clear()


@pytest.mark.parametrize(("policy", "grace", "want_runs", "want_skipped"), [
    # down from 00:10 to 01:02; */5 ticks missed: 00:15 … 01:00 (10 ticks)
    ("coalesce", None, [ms("2025-01-01T01:00:00")], 9),
    ("catch_up", None, [ms("2025-01-01T00:15:00") + k * 5 * MIN for k in range(10)], 0),
    ("catch_up", 15 * 60, [ms("2025-01-01T00:50:00"), ms("2025-01-01T00:55:00"),
                           ms("2025-01-01T01:00:00")], 7),
    ("skip", None, [], 10),
])
async def test_restart_after_downtime_applies_the_misfire_policy(
        tmp_path: Path, policy: str, grace: float | None, want_runs: list[int],
        want_skipped: int) -> None:
    clock = SettlingClock(T0)
    jobs = [spec("j", "*/5 * * * *", misfire=policy, grace_s=grace, max_concurrent=10)]
    eng1 = engine(runtime(tmp_path, clock), jobs)
    async with running(eng1):
        await clock.run_until(ms("2025-01-01T00:10:30"))
    assert by_status(runs(eng1), "success") == [T0 + 5 * MIN, T0 + 10 * MIN]
    clock.set(ms("2025-01-01T01:02:00"))
    eng2 = engine(runtime(tmp_path, clock), jobs)
    async with running(eng2):
        await clock.run_until(ms("2025-01-01T01:02:01"))
    rows = [r for r in runs(eng2) if r.scheduled_for > T0 + 10 * MIN]
    assert by_status(rows, "success") == want_runs
    assert len(by_status(rows, "skipped")) == want_skipped
    # Every missed tick is accounted for exactly once.
    assert sorted(r.scheduled_for for r in rows) == [T0 + 15 * MIN + k * 5 * MIN
                                                    for k in range(10)]


async def test_kill_then_restart_marks_dangling_runs_abandoned_and_catches_up(
        tmp_path: Path) -> None:
    clock = SettlingClock(T0)

    async def slow(ctx: JobContext) -> None:
        await ctx.clock.sleep(3600)

    jobs = [spec("slow", "*/5 * * * *", slow), spec("quick", "*/5 * * * *")]
    eng1 = engine(runtime(tmp_path, clock), jobs)
    task = asyncio.ensure_future(eng1.run())
    await clock.run_until(ms("2025-01-01T00:06:00"))
    await _crash(eng1, task)
    assert [r.status for r in runs(eng1, "slow")] == ["running"]
    clock.set(ms("2025-01-01T00:21:00"))
    eng2 = engine(runtime(tmp_path, clock), jobs)  # same node name: a restart
    async with running(eng2):
        await clock.run_until(ms("2025-01-01T00:21:01"))
        slow_rows = runs(eng2, "slow")
        assert slow_rows[0].status == "abandoned" and "restarted" in (slow_rows[0].error or "")
        # coalesce: one run for 00:10-00:20, the earlier ones recorded as skipped
        assert [r.status for r in runs(eng2, "quick")] == ["success", "skipped", "skipped",
                                                           "success"]


async def test_a_run_another_node_lost_is_told_to_observers_as_abandoned(
        tmp_path: Path) -> None:
    """Alerts hear of a run whose node died mid-run (its lease expired): the node that
    sweeps it reports it, marked as not run here (so its run metrics leave it out)."""
    clock = SettlingClock(T0)

    async def slow(ctx: JobContext) -> None:
        await ctx.clock.sleep(3600)

    jobs = [spec("slow", "0 * * * *", slow)]
    eng1 = engine(runtime(tmp_path, clock, node="dies"), jobs)
    task = asyncio.ensure_future(eng1.run())
    await clock.run_until(ms("2025-01-01T01:00:30"))
    await _crash(eng1, task)
    eng2 = engine(runtime(tmp_path, clock, node="lives"), jobs)
    told: list[Any] = []

    async def observer(outcome: Any, sp: Any) -> None:
        told.append((outcome, sp.name))

    eng2.host.observers = [observer]
    async with running(eng2):
        await clock.run_until(ms("2025-01-01T01:10:00"))
    abandoned = [(o, name) for o, name in told if o.status == "abandoned"]
    assert len(abandoned) == 1
    outcome, name = abandoned[0]
    assert name == "slow" and not outcome.ran_here and "dies" in outcome.error
    assert runs(eng2, "slow")[0].status == "abandoned"


async def test_max_concurrent_one_never_overlaps_and_accounts_every_tick(
        tmp_path: Path) -> None:
    clock = SettlingClock(T0)

    async def body(ctx: JobContext) -> None:
        await ctx.clock.sleep(150)

    eng = engine(runtime(tmp_path, clock), [spec("j", "* * * * *", body)])
    async with running(eng):
        await clock.run_until(ms("2025-01-01T00:30:00"))
    rows = runs(eng)
    ran = [r for r in rows if r.status == "success"]
    for a, b in itertools.pairwise(ran):
        assert a.finished_at is not None and b.started_at is not None
        assert b.started_at >= a.finished_at
    assert len(ran) >= 8
    ticks = [r.scheduled_for for r in rows]
    assert ticks == sorted(set(ticks))
    assert ticks == [T0 + k * MIN for k in range(1, len(ticks) + 1)]  # none lost


async def test_max_concurrent_two_allows_two_not_three(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    body = Overlap(150)
    eng = engine(runtime(tmp_path, clock),
                 [spec("j", "* * * * *", body, max_concurrent=2, misfire="catch_up")])
    async with running(eng):
        await clock.run_until(ms("2025-01-01T00:20:00"))
    assert body.peak == 2


async def test_retries_back_off_then_give_up_leaving_the_error(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    attempts_at: list[int] = []

    async def body(ctx: JobContext) -> JobResult:
        attempts_at.append(ctx.clock.now_ms())
        return JobResult(errors=[f"boom #{len(attempts_at)}"])

    eng = engine(runtime(tmp_path, clock), [
        spec("j", "0 * * * *", body, attempts=4, backoff_s=30, max_backoff_s=100)])
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:30:00"))
    rows = runs(eng)
    assert [(r.attempt, r.status) for r in rows] == [(1, "failed"), (2, "failed"),
                                                    (3, "failed"), (4, "failed")]
    assert {r.scheduled_for for r in rows} == {ms("2025-01-01T01:00:00")}
    assert [r.error for r in rows] == ["boom #1", "boom #2", "boom #3", "boom #4"]
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    # 30s, 60s, 120s→capped at 100s; jitter only lengthens, never past max_backoff
    assert 30_000 <= gaps[0] <= 37_500
    assert 60_000 <= gaps[1] <= 75_000
    assert gaps[2] == 100_000


async def test_a_retry_that_succeeds(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    calls = 0

    async def body(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("exchange down")

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body, attempts=3)])
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:10:00"))
    assert [(r.attempt, r.status, r.error) for r in runs(eng)] == [
        (1, "failed", "ConnectionError: exchange down"), (2, "success", None)]


async def test_timeout_cancels_records_timed_out_and_keeps_checkpoints(
        tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    saw_cancel: list[bool] = []
    key = SeriesKey("sim", "BTC/USDT", "1m")

    async def body(ctx: JobContext) -> None:
        ctx.runtime.state.set_checkpoint(ctx.job_name, key, 12345, ctx.clock.now_ms())
        try:
            await ctx.clock.sleep(3600)
        finally:
            saw_cancel.append(ctx.cancel.is_set())

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body, timeout_s=60)])
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:05:00"))
    (row,) = runs(eng)
    assert row.status == "timed_out" and row.error == "timed out after 1m00s"
    assert row.finished_at == ms("2025-01-01T01:01:00")
    assert saw_cancel == [True]
    assert eng.runtime.state.get_checkpoint("j", key) == 12345


@pytest.mark.parametrize(("stop_timeout", "status"), [(300.0, "success"), (30.0, "cancelled")])
async def test_stop_lets_running_jobs_finish_within_the_timeout(
        tmp_path: Path, stop_timeout: float, status: str) -> None:
    clock = SettlingClock(T0)

    async def body(ctx: JobContext) -> None:
        await ctx.clock.sleep(120)

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body)])
    task = asyncio.ensure_future(eng.run())
    await clock.run_until(ms("2025-01-01T01:00:10"))
    eng.request_stop(stop_timeout)
    await clock.run_until(ms("2025-01-01T01:10:00"))
    await task
    (row,) = runs(eng)
    assert row.status == status
    assert eng.store.get_node("n1") is not None
    assert eng.store.get_node("n1").status == "stopped"  # type: ignore[union-attr]


async def test_state_db_failures_are_retried_and_the_loop_survives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SettlingClock(T0)
    eng = engine(runtime(tmp_path, clock), [spec("j", "* * * * *")])
    real_claim, real_finish = eng.store.claim, eng.store.finish_many
    broken = {"claim": True, "finish": True}

    def claim(*a: Any, **kw: Any) -> Any:
        if broken["claim"]:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is unreachable"))
        return real_claim(*a, **kw)

    def finish(*a: Any) -> Any:
        if broken["finish"]:
            raise OSError(28, "No space left on device")
        return real_finish(*a)

    monkeypatch.setattr(eng.store, "claim", claim)
    monkeypatch.setattr(eng.store, "finish_many", finish)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T00:03:30"))
        assert runs(eng) == [] and eng.stats.db_errors >= 2
        broken["claim"] = False
        await clock.run_until(ms("2025-01-01T00:05:30"))
        statuses = {r.status for r in runs(eng)}
        assert "running" in statuses and "success" not in statuses  # finishes are queued
        broken["finish"] = False
        await clock.run_until(ms("2025-01-01T00:08:30"))
    rows = runs(eng)
    assert rows and {r.status for r in rows} == {"success", "skipped"}
    ticks = [r.scheduled_for for r in rows]
    assert ticks == [T0 + k * MIN for k in range(1, 9)]  # the outage lost no tick


async def test_disabled_jobs_do_not_run_or_catch_up_later(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    eng = engine(runtime(tmp_path, clock), [spec("j", "*/5 * * * *", enabled=False)],
                 heartbeat_s=5)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:00:00"))
    # Each tick is in the history, skipped because the job is disabled.
    assert [r.scheduled_for for r in runs(eng)] == [T0 + k * 5 * MIN for k in range(1, 13)]
    assert {(r.status, r.error) for r in runs(eng)} == {("skipped",
                                                         "skipped: the job is disabled")}
    eng2 = engine(runtime(tmp_path, clock), [spec("j", "*/5 * * * *", misfire="catch_up")])
    async with running(eng2):
        await clock.run_until(ms("2025-01-01T01:05:00"))
    assert by_status(runs(eng2), "success") == [ms("2025-01-01T01:05:00")]
    assert len(runs(eng2)) == 13  # re-enabled: no catch-up of the disabled period


async def test_two_nodes_share_ticks_exactly_once_and_survive_a_crash(
        tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    body = Overlap(90)
    jobs = [spec("long", "* * * * *", body), spec("a", "* * * * *"),
            spec("b", "*/2 * * * *")]
    n1 = engine(runtime(tmp_path, clock, "n1"), jobs, heartbeat_s=5)
    n2 = engine(runtime(tmp_path, clock, "n2"), jobs, heartbeat_s=5)
    t1 = asyncio.ensure_future(n1.run())
    async with running(n2):
        await clock.run_until(ms("2025-01-01T00:20:00"))
        await _crash(n1, t1)
        body.active = 0  # the crashed node's job is gone with it
        await clock.run_until(ms("2025-01-01T00:40:00"))
    rows = runs(n2)
    for job, step in (("a", 1), ("b", 2)):
        ticks = [r.scheduled_for for r in rows if r.job == job]
        assert ticks == [T0 + k * step * MIN for k in range(1, 40 // step + 1)], job
    assert {r.node for r in rows if r.job == "a" and r.scheduled_for <= T0 + 20 * MIN} <= {
        "n1", "n2"}
    assert body.peak == 1
    longs = [r for r in rows if r.job == "long" and r.status != "skipped"]
    assert any(r.status == "abandoned" and r.node == "n1" for r in longs)
    assert all(r.node == "n2" for r in longs if r.scheduled_for > T0 + 20 * MIN)
    live = [r for r in longs if r.status != "abandoned"]
    for x, y in itertools.pairwise(live):
        assert y.started_at is not None and x.finished_at is not None
        assert y.started_at >= x.finished_at


async def test_running_rows_keep_heartbeating(tmp_path: Path) -> None:
    clock = SettlingClock(T0)

    async def body(ctx: JobContext) -> None:
        await ctx.clock.sleep(600)

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body)], heartbeat_s=5)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:04:00"))
        with eng.runtime.state.engine.connect() as conn:
            hb = conn.execute(sa.select(t.runs.c.heartbeat_at)).scalar_one()
        assert ms("2025-01-01T01:03:50") <= hb <= ms("2025-01-01T01:04:00")
        await settle()


async def test_global_and_per_source_concurrency_limits(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    active = {"all": 0, "x": 0}
    peak = dict(active)

    def body(*groups: str) -> Callable[[JobContext], Awaitable[None]]:
        async def run(ctx: JobContext) -> None:
            for g in groups:
                active[g] += 1
                peak[g] = max(peak[g], active[g])
            try:
                await ctx.clock.sleep(150)
            finally:
                for g in groups:
                    active[g] -= 1
        return run

    jobs = [spec("x1", "* * * * *", body("all", "x"), sources={"x"}),
            spec("x2", "* * * * *", body("all", "x"), sources={"x"}),
            spec("y1", "* * * * *", body("all"), sources={"y"}),
            spec("free", "* * * * *", body("all"))]
    rt = runtime(tmp_path, clock, max_concurrent_runs=2,
                 sources={"x": {"type": "sim", "max_concurrent_jobs": 1},
                          "y": {"type": "sim"}})
    eng = engine(rt, jobs)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T00:30:00"))
    assert peak == {"all": 2, "x": 1}  # two runs at once at most, one of them on source x
    done = {r.job for r in runs(eng) if r.status == "success"}
    assert done == {"x1", "x2", "y1", "free"}  # everyone gets a turn


async def test_a_slot_freed_at_the_tick_is_free_for_a_skip_job(tmp_path: Path) -> None:
    """Finishes are recorded before claims: a run that ends exactly at the next tick does
    not make a ``misfire: skip`` job miss that tick."""
    clock = SettlingClock(T0)
    eng = engine(runtime(tmp_path, clock), [spec("j", "*/2 * * * * *", Overlap(2.0),
                                                 misfire="skip")])
    async with running(eng):
        await clock.run_until(T0 + 30_000)
    rows = runs(eng)
    assert [r.scheduled_for for r in rows] == list(range(T0 + 2000, T0 + 30_001, 2000))
    assert {r.status for r in rows[:-1]} == {"success"}


async def test_a_run_taken_from_a_stalled_node_is_stopped_and_not_recorded(
        tmp_path: Path) -> None:
    """Self-fencing: the heartbeat no longer holds the run (another node abandoned it while
    this one stalled), so this node cancels it and keeps its hands off the row."""
    clock = SettlingClock(T0)
    seen: list[str] = []

    async def body(ctx: JobContext) -> JobResult:
        await _first_of(ctx.clock.sleep(600), ctx.cancel.wait())
        seen.append("cancelled" if ctx.cancel.is_set() else "finished")
        return JobResult(rows_written=7)

    eng = engine(runtime(tmp_path, clock, "n1"), [spec("j", "0 * * * *", body)], heartbeat_s=5)
    async with running(eng):
        await clock.run_until(T0 + 3_600_000 + 1000)
        (row,) = runs(eng)
        with eng.runtime.state.engine.begin() as conn:  # what another node's sweep does
            conn.execute(t.runs.update().where(t.runs.c.id == row.id).values(
                status="abandoned", error="abandoned: lease expired"))
        await clock.run_until(T0 + 3_600_000 + 6000)  # the next heartbeat
        assert seen == ["cancelled"]
    (after,) = runs(eng)
    assert (after.status, after.error, after.rows_written) == (
        "abandoned", "abandoned: lease expired", 0)


async def test_a_node_that_cannot_heartbeat_cancels_its_runs_before_its_lease_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SettlingClock(T0)
    cancelled_at: list[int] = []

    async def body(ctx: JobContext) -> JobResult:
        await _first_of(ctx.clock.sleep(600), ctx.cancel.wait())
        if ctx.cancel.is_set():
            cancelled_at.append(ctx.clock.now_ms())
            return JobResult(errors=["stopped half-way"])
        return JobResult()

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body)], heartbeat_s=5)
    real = eng.store.heartbeat

    def down(*a: Any, **kw: Any) -> Any:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    async with running(eng):
        await clock.run_until(T0 + 3_600_000 + 2000)
        last_good = T0 + 3_600_000 + 0  # the run started at 01:00:00, beats from there
        monkeypatch.setattr(eng.store, "heartbeat", down)
        await clock.run_until(T0 + 3_600_000 + 20_000)
        monkeypatch.setattr(eng.store, "heartbeat", real)
    # Lease 15 s, heartbeat 5 s: fenced within lease - heartbeat of the last good beat,
    # so before any other node could take the run.
    assert cancelled_at and cancelled_at[0] <= last_good + 15_000
    (row,) = runs(eng)
    assert row.status == "cancelled" and "fenced" in (row.error or "")


async def test_a_result_the_database_refuses_is_parked_and_the_rest_recorded(
        tmp_path: Path) -> None:
    """One unrecordable row (here a rows_written no BIGINT holds) must not keep a batch
    of finished runs, and every later one, out of the history."""
    clock = SettlingClock(T0)

    async def poison(ctx: JobContext) -> JobResult:
        return JobResult(rows_written=2**70)

    eng = engine(runtime(tmp_path, clock), [spec("bad", "* * * * *", poison),
                                            spec("good", "* * * * *")])
    async with running(eng):
        await clock.run_until(T0 + 5 * MIN + 1)
    bad, good = runs(eng, "bad"), runs(eng, "good")
    assert [r.status for r in good] == ["success"] * 5
    assert [r.status for r in bad] == ["success"] * 5
    assert all("could not be recorded" in (r.error or "") and r.rows_written == 0 for r in bad)


async def test_the_daemon_applies_retention_daily(tmp_path: Path) -> None:
    from candlekeep.scheduler.retention import Retention

    clock = SettlingClock(T0)
    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *")], heartbeat_s=600,
                 retention=Retention(runs_ms=2 * 86_400_000, skipped_ms=None, nodes_ms=None))
    async with running(eng):
        await clock.run_until(T0 + 4 * 86_400_000 + 1000)
    ticks = [r.scheduled_for for r in runs(eng)]
    # Pruned at start-up of each day: what is left is at most the last 2 days (+ the day
    # since the last prune).
    assert ticks[0] >= T0 + 86_400_000 and ticks[-1] == T0 + 4 * 86_400_000
    assert len(ticks) < 4 * 24


async def _first_of(*aws: Awaitable[Any]) -> None:
    futs = [asyncio.ensure_future(a) for a in aws]
    await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    for f in futs:
        f.cancel()


async def test_timeout_and_started_at_begin_when_the_slot_is_held(tmp_path: Path) -> None:
    """A run queued behind another for this process's only slot of a source is not timed out
    by its wait, and its start is when it got the slot."""
    clock = SettlingClock(T0)

    async def long(ctx: JobContext) -> None:
        await ctx.clock.sleep(120)

    async def short(ctx: JobContext) -> None:
        await ctx.clock.sleep(10)

    jobs = [spec("long", "0 * * * *", long, sources={"x"}),
            spec("short", "0 * * * *", short, sources={"x"}, timeout_s=60)]
    rt = runtime(tmp_path, clock, sources={"x": {"type": "sim", "max_concurrent_jobs": 1}})
    eng = engine(rt, jobs)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T01:05:00"))
    rows = {r.job: r for r in runs(eng)}
    assert rows["long"].status == rows["short"].status == "success"
    assert rows["long"].started_at == ms("2025-01-01T01:00:00")
    assert rows["short"].started_at == ms("2025-01-01T01:02:00")  # when "long" let go
    assert rows["short"].finished_at == ms("2025-01-01T01:02:10")


async def test_runs_are_claimed_ahead_of_their_tick_and_start_at_it(tmp_path: Path) -> None:
    clock = SettlingClock(T0)
    began: list[int] = []

    async def body(ctx: JobContext) -> None:
        began.append(ctx.clock.now_ms())

    eng = engine(runtime(tmp_path, clock), [spec("j", "0 * * * *", body)],
                 claim_ahead_s=0.5)
    async with running(eng):
        await clock.run_until(ms("2025-01-01T00:59:59.600"))
        (row,) = runs(eng)  # claimed already: the transaction is behind us at the tick
        assert (row.scheduled_for, row.status) == (ms("2025-01-01T01:00:00"), "running")
        assert began == []
        await clock.run_until(ms("2025-01-01T01:00:01"))
    assert began == [ms("2025-01-01T01:00:00")]
    assert runs(eng)[0].started_at == ms("2025-01-01T01:00:00")
