"""The state store's transactions, one at a time."""

from __future__ import annotations

from pathlib import Path

from candlekeep.scheduler.store import Finish, SchedulerStore
from candlekeep.state.db import StateDB
from tests.scheduler.helpers import ms, spec

T0 = ms("2025-01-01T00:00:00")


def store(tmp_path: Path, lease_ms: int = 15_000) -> SchedulerStore:
    return SchedulerStore(StateDB(f"sqlite:///{tmp_path / 'state.db'}"), lease_ms=lease_ms)


def test_new_jobs_start_counting_from_registration(tmp_path: Path) -> None:
    s = store(tmp_path)
    last = s.ensure_jobs([spec("j", "*/5 * * * *")], T0 + 7 * 60_000, "n1")
    assert last == {"j": T0 + 7 * 60_000}
    (o,) = s.claim([spec("j", "*/5 * * * *")], T0 + 60 * 60_000, "n1")
    assert [r.scheduled_for for r in o.runs] == [T0 + 60 * 60_000]
    assert o.skipped == 10  # 00:10 … 00:55, coalesced


def test_a_retry_holds_the_slot_through_its_backoff(tmp_path: Path) -> None:
    s = store(tmp_path)
    j = spec("j", "* * * * *", max_concurrent=1, misfire="catch_up")
    s.ensure_jobs([j], T0, "n1")
    (o,) = s.claim([j], T0 + 60_000, "n1")
    run = o.runs[0]
    waiting = s.retry(Finish(run.run_id, "failed", T0 + 61_000, error="boom"), "j",
                      run.scheduled_for, 2, "n1", "schedule", T0 + 61_000)
    assert waiting is not None
    s.heartbeat([waiting], "n1", T0 + 119_000)  # the engine's beat keeps it live
    (blocked,) = s.claim([j], T0 + 120_000, "n1")
    assert blocked.runs == [] and blocked.pending
    assert s.retry(Finish(run.run_id, "failed", T0 + 61_000), "j", run.scheduled_for, 2,
                   "n1", "schedule", T0 + 61_000) is None  # attempt 2 exists already
    assert s.start_waiting(waiting, T0 + 125_000)
    s.finish_many([Finish(waiting, "success", T0 + 126_000)])
    (free,) = s.claim([j], T0 + 126_500, "n1")
    assert [r.scheduled_for for r in free.runs] == [T0 + 120_000]
    rows = sorted(s.state.list_runs(limit=None), key=lambda r: r.id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "failed"), (2, "success"),
                                                    (1, "running")]


def test_sweep_abandons_expired_leases_respecting_the_owners_longer_lease(
        tmp_path: Path) -> None:
    fast = store(tmp_path, lease_ms=3_000)
    slow = store(tmp_path, lease_ms=30_000)
    slow.register_node("slow-node", 1, T0, "test")
    fast.register_node("fast-node", 2, T0, "test")
    a = fast.state.start_run("a", T0, "slow-node", T0)
    b = fast.state.start_run("b", T0, "fast-node", T0)
    c = fast.state.start_run("c", T0, "gone-node", T0)
    assert a and b and c
    # fast-node's own 3 s lease is over; slow-node's 30 s is not; an unregistered node (a
    # 'candlekeep run' process) gets the default 15 s.
    assert [job for _, job, _ in fast.sweep(T0 + 10_000)] == ["b"]
    assert [job for _, job, _ in fast.sweep(T0 + 16_000)] == ["c"]
    assert [job for _, job, _ in fast.sweep(T0 + 31_000)] == ["a"]
    statuses = {r.job: (r.status, r.error) for r in fast.state.list_runs()}
    assert statuses["c"][0] == "abandoned" and "gone-node" in (statuses["c"][1] or "")
    assert {n.node: n.status for n in fast.nodes()} == {"fast-node": "dead",
                                                        "slow-node": "dead"}


def test_disabled_jobs_are_kept_current(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.ensure_jobs([spec("j", "*/5 * * * *")], T0, "n1")
    s.ensure_jobs([spec("j", "*/5 * * * *", enabled=False)], T0 + 3_600_000, "n1")
    assert s.job_rows()["j"].last_tick == T0 + 3_600_000
    s.housekeep([], None, T0 + 7_200_000, ["j"])
    assert s.job_rows()["j"].last_tick == T0 + 7_200_000
