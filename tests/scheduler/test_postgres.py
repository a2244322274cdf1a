"""The claim path on PostgreSQL (row locks, ON CONFLICT, RETURNING), with several nodes."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from candlekeep.scheduler.engine import Engine
from candlekeep.scheduler.records import Owner
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.state.rows import RunRow
from tests.scheduler.helpers import Overlap, SettlingClock, engine, ms, running, runtime, spec

T0 = ms("2025-01-01T00:00:00")


def rows(eng: Engine) -> list[RunRow]:
    return sorted(eng.runtime.state.list_runs(limit=None),
                  key=lambda r: (r.job, r.scheduled_for, r.attempt))


async def test_three_nodes_on_postgres_claim_each_tick_once(tmp_path: Path,
                                                           pg_url: str) -> None:
    clock = SettlingClock(T0)
    body = Overlap(2.5)
    jobs = [spec("tick", "* * * * * *"), spec("every3", "*/3 * * * * *"),
            spec("long", "* * * * * *", body, misfire="catch_up", grace_s=2)]
    nodes = [engine(runtime(tmp_path / f"n{i}", clock, f"n{i}", state=pg_url), jobs,
                    heartbeat_s=2) for i in range(3)]
    async with running(nodes[0]), running(nodes[1]), running(nodes[2]):
        await clock.run_until(T0 + 120_000)
    all_rows = rows(nodes[0])
    for job, step in (("tick", 1000), ("every3", 3000)):
        ticks = [r.scheduled_for for r in all_rows if r.job == job]
        assert ticks == list(range(T0 + step, T0 + 120_001, step)), job
    assert {r.node for r in all_rows if r.job == "tick"} <= {"n0", "n1", "n2"}
    assert len({r.node for r in all_rows}) >= 2
    assert body.peak == 1
    longs = [r for r in all_rows if r.job == "long" and r.status == "success"]
    for a, b in itertools.pairwise(longs):
        assert a.finished_at is not None and b.started_at is not None
        assert b.started_at >= a.finished_at


def test_batch_claim_on_postgres_uses_row_locks_and_returns_ids(tmp_path: Path,
                                                              pg_url: str) -> None:
    clock = SettlingClock(T0)
    rt = runtime(tmp_path, clock, "n1", state=pg_url)
    store = SchedulerStore(rt.state, Owner("n1", "h/1/a", 15_000), db_clock=False)
    specs = [spec(f"j{i:03d}", "* * * * * *") for i in range(600)]
    store.ensure_jobs(specs, T0)
    out = store.claim(specs, T0 + 1500)
    assert sum(len(o.runs) for o in out) == 600
    assert all(o.runs[0].scheduled_for == T0 + 1000 for o in out)
    other = SchedulerStore(rt.state, Owner("n2", "h/2/b", 15_000), db_clock=False)
    again = other.claim(specs, T0 + 1500)
    assert sum(len(o.runs) for o in again) == 0
    ids = [o.runs[0].run_id for o in out]
    assert len(set(ids)) == 600


@pytest.mark.parametrize("n_threads", [4])
async def test_concurrent_claims_from_threads_never_double_claim(
        tmp_path: Path, pg_url: str, n_threads: int) -> None:
    clock = SettlingClock(T0)
    rt = runtime(tmp_path, clock, "n1", state=pg_url)
    specs = [spec(f"j{i:02d}", "* * * * * *", max_concurrent=1) for i in range(50)]
    stores = [SchedulerStore(runtime(tmp_path, clock, f"n{k}", state=pg_url).state,
                             Owner(f"n{k}", f"h/{k}/x", 15_000), db_clock=False)
              for k in range(n_threads)]
    stores[0].ensure_jobs(specs, T0)

    def claim_all(k: int) -> int:
        n = 0
        for second in range(1, 11):
            for o in stores[k].claim(specs, T0 + second * 1000):
                n += len(o.runs)
        return n

    counts = await asyncio.gather(*(asyncio.to_thread(claim_all, k) for k in range(n_threads)))
    # Nothing finishes, so max_concurrent=1 allows exactly one run per job in total.
    assert sum(counts) == 50
    assert len(rt.state.list_runs(status="running", limit=None)) == 50
