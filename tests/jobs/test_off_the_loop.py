"""Jobs never make a blocking state-DB or store call on the event loop: the daemon
dispatches every other job's ticks on that loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from candlekeep.jobs.runner import build_params
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.sim.exchange import SimExchange, TransientSpec
from tests.jobs.conftest import NOW, RuntimeFactory

STATE_CALLS = ("get_checkpoint", "set_checkpoint", "clear_checkpoints", "list_gaps",
               "update_gaps", "update_gap", "record_gap_scan", "gap_counts")
STORE_CALLS = ("upsert_candles", "spans", "find_gaps", "read_candles")


def spy(obj: object, names: tuple[str, ...], seen: list[tuple[str, int]]) -> None:
    for name in names:
        real = getattr(obj, name)

        def wrapper(*a: Any, _real: Callable[..., Any] = real, _name: str = name,
                    **kw: Any) -> Any:
            seen.append((_name, threading.get_ident()))
            return _real(*a, **kw)

        setattr(obj, name, wrapper)


@pytest.mark.parametrize("restart", [False, True])
async def test_data_jobs_reach_the_state_db_and_stores_off_the_loop(
        make_runtime: RuntimeFactory, restart: bool) -> None:
    from candlekeep.core.clock import FakeClock

    ex = SimExchange(7, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(NOW), holes=None,
                     transient=TransientSpec(period_ms=6 * 3_600_000, probability=1.0))
    rt = make_runtime(ex, ["BTC/USDT"], ["1m", "1h"])
    seen: list[tuple[str, int]] = []
    spy(rt.state, STATE_CALLS, seen)
    spy(rt.store("main"), STORE_CALLS, seen)
    loop_thread = threading.get_ident()
    for job, params in (("backfill", {"restart": restart}), ("ingest", {}),
                        ("gaps_scan", {}), ("gaps_repair", {})):
        attempt = await execute_attempt(rt, adhoc_spec(job, build_params(job, params)),
                                        asyncio.Event())
        assert attempt.status == "success", (job, attempt.error)
    called = {name for name, _ in seen}
    assert {"set_checkpoint", "upsert_candles", "spans", "find_gaps", "record_gap_scan",
            "list_gaps", "update_gaps"} <= called
    assert ("clear_checkpoints" in called) == restart
    assert ("get_checkpoint" in called) != restart
    on_loop = sorted({name for name, thread in seen if thread == loop_thread})
    assert on_loop == []


async def test_dataset_calls_through_the_facade_run_off_the_loop(
        make_runtime: RuntimeFactory) -> None:
    import pyarrow as pa

    from candlekeep.core.datasets import Dataset
    from candlekeep.jobs.facades import open_store

    notes = Dataset("ck_notes", pa.schema([pa.field("k", pa.string(), nullable=False),
                                           pa.field("v", pa.int64())]), ("k",))
    rt = make_runtime(SimExchange(7, {"BTC/USDT": "2017-08-17"}), ["BTC/USDT"], ["1m"])
    seen: list[tuple[str, int]] = []
    spy(rt.store("main"), ("upsert", "read", "stats"), seen)
    store = await open_store(rt, "main")
    assert await store.upsert(notes, pa.table({"k": ["a", "b"], "v": [1, 2]})) == 2
    got = await store.read(notes, where={"k": "b"})
    assert got.column("v").to_pylist() == [2]
    assert "ck_notes" in {s.name for s in await store.stats()}
    assert [name for name, _ in seen] == ["upsert", "read", "stats"]
    assert all(thread != threading.get_ident() for _, thread in seen)
