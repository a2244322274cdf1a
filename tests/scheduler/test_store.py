"""The state store's transactions, one at a time: claims, leases, guarded writes, retries
the cluster owns, spec agreement. Several stores on one DB stand for several nodes."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from candlekeep.scheduler.records import (
    Busy,
    ClaimedRun,
    ClaimState,
    Conflict,
    Finish,
    Owner,
    TickTaken,
)
from candlekeep.scheduler.store import SchedulerStore, Timeouts
from candlekeep.state.db import StateDB
from candlekeep.state.statuses import RunStatus, Trigger
from tests.scheduler.helpers import ms, spec

T0 = ms("2025-01-01T00:00:00")
S = RunStatus


def node(db: StateDB, name: str, lease_ms: int = 15_000, **kw: object) -> SchedulerStore:
    return SchedulerStore(db, Owner(name, f"{name}-i1", lease_ms), **kw)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB(f"sqlite:///{tmp_path / 'state.db'}")


def statuses(db: StateDB) -> list[tuple[str, int, str]]:
    return [(r.job, r.attempt, r.status) for r in sorted(db.list_runs(limit=None),
                                                         key=lambda r: r.id)]


def test_new_jobs_start_counting_from_registration(db: StateDB) -> None:
    s = node(db, "n1")
    j = spec("j", "*/5 * * * *")
    rows = s.ensure_jobs([j], T0 + 7 * 60_000)
    assert rows["j"].last_tick == T0 + 7 * 60_000 and rows["j"].spec_hash == j.digest
    (o,) = s.claim([j], T0 + 60 * 60_000)
    assert [r.scheduled_for for r in o.runs] == [T0 + 60 * 60_000]
    assert o.skipped == 10  # 00:10 … 00:55, coalesced


def test_the_owners_lease_decides_liveness_not_the_claimers(db: StateDB) -> None:
    slow, fast = node(db, "slow", 30_000), node(db, "fast", 3_000)
    j = spec("j", "* * * * * *")
    slow.ensure_jobs([j], T0)
    (o,) = slow.claim([j], T0 + 1000)
    assert o.runs
    # slow's run beat 10 s ago: long past fast's 3 s lease, well within slow's own 30 s.
    (o2,) = fast.claim([j], T0 + 11_000)
    assert o2.runs == [] and o2.pending
    assert fast.sweep(T0 + 11_000) == []
    (o3,) = fast.claim([j], T0 + 31_500)
    assert [r.scheduled_for for r in o3.runs] == [T0 + 31_000]
    assert statuses(db)[0] == ("j", 1, "abandoned")


def test_a_late_finish_never_overwrites_history(db: StateDB) -> None:
    a, b = node(db, "a", 3_000), node(db, "b", 3_000)
    j = spec("j", "* * * * * *")
    a.ensure_jobs([j], T0)
    (o,) = a.claim([j], T0 + 1000)
    run = o.runs[0].run_id
    (gone,) = b.sweep(T0 + 10_000)
    assert gone.run_id == run and gone.retry_id is None
    (c,) = a.finish_many([Finish(run, S.SUCCESS, T0 + 11_000, rows_written=5)])
    assert c == Conflict(run, S.SUCCESS, "abandoned", "a")
    assert isinstance(a.retry(Finish(run, S.FAILED, T0 + 11_000), T0 + 1000, "j", 2,
                              Trigger.SCHEDULE, T0 + 20_000), Conflict)
    assert statuses(db) == [("j", 1, "abandoned")]
    # Another instance under the same node name cannot finish it either.
    twin = SchedulerStore(db, Owner("a", "a-i2", 3_000))
    (o2,) = twin.claim([j], T0 + 12_000)
    assert a.finish_many([Finish(o2.runs[0].run_id, S.SUCCESS, T0 + 12_500)])
    assert twin.finish_many([Finish(o2.runs[0].run_id, S.SUCCESS, T0 + 12_500)]) == []


def test_heartbeats_hold_only_our_live_rows(db: StateDB) -> None:
    a, b = node(db, "a", 3_000), node(db, "b", 3_000)
    j, k = spec("j", "* * * * * *"), spec("k", "* * * * * *")
    a.ensure_jobs([j, k], T0)
    ja, ka = (o.runs[0].run_id for o in a.claim([j, k], T0 + 1000))
    assert a.heartbeat([ja, ka], T0 + 2000).held == {ja, ka}
    b.sweep(T0 + 6000)  # both expired: abandoned by b
    assert a.heartbeat([ja, ka], T0 + 6100).held == frozenset()


def test_a_failed_attempt_hands_its_slot_to_a_waiting_retry(db: StateDB) -> None:
    s = node(db, "n1")
    j = spec("j", "* * * * *", attempts=3)
    s.ensure_jobs([j], T0)
    (o,) = s.claim([j], T0 + 60_000)
    run = o.runs[0]
    waiting = s.retry(Finish(run.run_id, S.FAILED, T0 + 61_000, error="boom"), run.scheduled_for,
                      "j", 2, Trigger.SCHEDULE, T0 + 91_000)
    assert isinstance(waiting, int)
    (blocked,) = s.claim([j], T0 + 120_000)
    assert blocked.runs == [] and blocked.pending  # the retry holds the slot
    assert s.adopt(["j"], T0 + 80_000) == []  # not due yet
    assert s.start_waiting(waiting, T0 + 91_000)
    s.finish_many([Finish(waiting, S.SUCCESS, T0 + 92_000)])
    (free,) = s.claim([j], T0 + 126_500)
    assert [r.scheduled_for for r in free.runs] == [T0 + 120_000]
    assert statuses(db) == [("j", 1, "failed"), ("j", 2, "success"), ("j", 1, "running")]


def failed_once(s: SchedulerStore) -> int:
    """Job "j" (two attempts) claimed at 00:01 by ``s``, failed at 00:01:01: the id of
    its second attempt, waiting until 00:01:05."""
    j = spec("j", "* * * * *", attempts=2)
    s.ensure_jobs([j], T0)
    run = s.claim([j], T0 + 60_000)[0].runs[0]
    waiting = s.retry(Finish(run.run_id, S.FAILED, T0 + 61_000), run.scheduled_for, "j", 2,
                      Trigger.SCHEDULE, T0 + 65_000)
    assert isinstance(waiting, int)
    return waiting


def test_a_retry_whose_creator_died_is_started_by_another_node(db: StateDB) -> None:
    a, b = node(db, "a", 3_000), node(db, "b", 3_000)
    waiting = failed_once(a)
    assert b.adopt(["j"], T0 + 63_000) == []  # not due yet (and a still holds it)
    # a's hold on the retry ran to 61 s + its 3 s lease: at 65 s (due) it is anyone's.
    adopted = b.adopt(["j"], T0 + 65_000)
    assert [(r.run_id, r.attempt) for r in adopted] == [(waiting, 2)]
    assert not a.start_waiting(waiting, T0 + 66_500)  # too late for a
    assert b.finish_many([Finish(waiting, S.FAILED, T0 + 67_000)]) == []
    rows = db.list_runs(limit=None)
    assert {(r.attempt, r.node, r.status) for r in rows} == {(1, "a", "failed"),
                                                            (2, "b", "failed")}


def test_an_expired_attempt_with_attempts_left_becomes_the_next_waiting_one(
        db: StateDB) -> None:
    a, b = node(db, "a", 3_000), node(db, "b", 3_000)
    j = spec("j", "* * * * *", attempts=2, backoff_s=10)
    a.ensure_jobs([j], T0)
    a.claim([j], T0 + 60_000)
    (gone,) = b.sweep(T0 + 70_000)
    assert gone.retry_id is not None
    (blocked,) = b.claim([j], T0 + 120_000)
    assert blocked.pending  # the retry inherited the slot
    (adopted,) = b.adopt(["j"], T0 + 90_000)
    assert (adopted.run_id, adopted.attempt, adopted.scheduled_for) == (gone.retry_id, 2,
                                                                        T0 + 60_000)


def test_a_stopping_node_hands_its_waiting_retry_to_anyone(db: StateDB) -> None:
    a, b = node(db, "a", 30_000), node(db, "b", 30_000)
    waiting = failed_once(a)
    assert b.adopt(["j"], T0 + 65_000) == []  # a's lease runs to 91 s
    assert a.release_waiting([waiting]) == 1
    assert [r.run_id for r in b.adopt(["j"], T0 + 65_000)] == [waiting]


def test_spec_changes_reset_ticks_and_nodes_that_disagree_do_not_claim(db: StateDB) -> None:
    a, b = node(db, "a"), node(db, "b")
    daily, fives = spec("j", "0 0 * * *"), spec("j", "*/5 * * * *")
    a.ensure_jobs([daily], T0)
    now = T0 + 3_600_000
    b.ensure_jobs([fives], now)  # b starts with a new config: its spec wins
    (ob,) = b.claim([fives], now + 1000)
    assert ob.runs == [] and ob.skipped == 0  # no phantom backlog of the new schedule
    (oa,) = a.claim([daily], T0 + 86_400_000)
    assert oa.state is ClaimState.CONFLICT and oa.conflict is not None
    assert oa.conflict.spec_by == "b" and oa.runs == []
    (ob2,) = b.claim([fives], now + 300_000)
    assert [r.scheduled_for for r in ob2.runs] == [now + 300_000]
    history = b.schedules()["j"]
    assert [(h.since, h.schedule) for h in history] == [(T0, "0 0 * * *"),
                                                       (now, "*/5 * * * *")]


def test_disabled_jobs_record_their_ticks_as_skipped_under_the_claim(db: StateDB) -> None:
    s = node(db, "n1")
    off = spec("j", "*/10 * * * *", enabled=False)
    s.ensure_jobs([off], T0)
    (o,) = s.claim([off], T0 + 3_600_000)
    assert o.runs == [] and o.last_tick == T0 + 3_600_000
    rows = db.list_runs(limit=None)
    assert len(rows) == 6 and {r.status for r in rows} == {"skipped"}
    assert all("disabled" in (r.error or "") for r in rows)


def test_manual_starts_take_a_slot_and_timers_stand_for_their_tick(db: StateDB) -> None:
    s, other = node(db, "n1"), node(db, "n2")
    j = spec("j", "* * * * *")
    first = s.start_manual(j, T0)
    assert isinstance(first, ClaimedRun) and first.trigger is Trigger.MANUAL
    busy = other.start_manual(j, T0 + 5)
    assert isinstance(busy, Busy) and busy.node == "n1"
    forced = other.start_manual(j, T0 + 5, force=True)
    assert isinstance(forced, ClaimedRun)
    s.finish_many([Finish(first.run_id, S.SUCCESS, T0 + 10)])
    other.finish_many([Finish(forced.run_id, S.SUCCESS, T0 + 10)])
    tick = T0 + 60_000
    timer = s.start_manual(j, tick + 300, trigger=Trigger.TIMER, scheduled_for=tick)
    assert isinstance(timer, ClaimedRun) and timer.scheduled_for == tick
    again = other.start_manual(j, tick + 400, trigger=Trigger.TIMER, scheduled_for=tick)
    assert again == TickTaken(timer.run_id, "n1", "running")


def test_text_postgres_cannot_store_is_cleaned(db: StateDB) -> None:
    s = node(db, "n1")
    j = spec("j", "* * * * *")
    run = s.start_manual(j, T0)
    assert isinstance(run, ClaimedRun)
    s.finish_many([Finish(run.run_id, S.FAILED, T0 + 1, error="a\x00b\ud800c" + "x" * 9000)])
    (row,) = db.list_runs()
    assert row.error is not None and "\x00" not in row.error and len(row.error) <= 4000
    row.error.encode("utf-8")


# -- PostgreSQL: the database's clock, row locks, timeouts --------------------------------


def test_leases_are_judged_by_the_databases_clock(pg_url: str) -> None:
    db = StateDB(pg_url)
    a, ahead = node(db, "a", 3_000), node(db, "ahead", 3_000)
    assert a.db_clock and ahead.db_clock
    now = a.db_now_ms()
    assert now is not None
    j = spec("j", "* * * * * *")
    a.ensure_jobs([j], now)
    (o,) = a.claim([j], now + 1000)
    assert o.runs
    # A node whose clock runs 20 s ahead sees nothing expired: leases are the DB's time.
    assert ahead.sweep(now + 20_000) == []
    (o2,) = ahead.claim([j], now + 21_000)
    assert o2.runs == [] and o2.pending
    a.dispose()
    ahead.dispose()
    db.dispose()


def test_manual_starts_of_an_unregistered_job_are_serialised(pg_url: str) -> None:
    stores = [node(StateDB(pg_url), f"n{k}", db_clock=False) for k in range(2)]
    results: dict[str, list[object]] = {f"m{i}": [] for i in range(20)}
    for job in results:
        barrier = threading.Barrier(2)

        def go(k: int, job: str = job, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            results[job].append(stores[k].start_manual(spec(job, None), T0))

        threads = [threading.Thread(target=go, args=(k,)) for k in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert all(sorted(type(x).__name__ for x in r) == ["Busy", "ClaimedRun"]
               for r in results.values()), results
    for s in stores:
        s.dispose()


def test_a_locked_job_row_is_skipped_by_claims_and_times_out_manual_starts(
        pg_url: str) -> None:
    db = StateDB(pg_url)
    s = node(db, "n1", db_clock=False, timeouts=Timeouts(lock_s=0.5, statement_s=5))
    a, b = spec("a", "* * * * * *"), spec("b", "* * * * * *")
    s.ensure_jobs([a, b], T0)
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT * FROM scheduler_jobs WHERE job = 'a' FOR UPDATE")
        got: list[object] = []
        worker = threading.Thread(target=lambda: got.append(s.claim([a, b], T0 + 1500)),
                                  daemon=True)
        worker.start()
        worker.join(20)
        assert got, "a claim waited on a row someone else holds"
        (oa, ob) = got[0]  # type: ignore[misc]
        assert oa.state is ClaimState.LOCKED and ob.runs
        with pytest.raises(Exception, match="lock"):
            s.start_manual(a, T0 + 1600)
    (o,) = s.claim([a], T0 + 1700)  # released: claimed now
    assert [r.scheduled_for for r in o.runs] == [T0 + 1000]
    s.dispose()
    db.dispose()
