"""``candlekeep run JOB``: one run now, in the foreground, recorded like a scheduled one.

It goes through the same attempts/timeout/retries code as the daemon, holds the job's slot
(a ``running`` row with a heartbeat) so the daemon will not overlap it, and records
``trigger = manual``. A dry run writes nothing, not even history.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

from candlekeep.jobs.base import ProgressSink
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.runner import Attempt, RunState, execute_attempt, run_attempts
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import DEFAULT_HEARTBEAT_S, Busy, Finish, SchedulerStore


@dataclass(slots=True)
class ManualOutcome:
    attempt: Attempt
    run_id: int | None
    started_at: int
    finished_at: int
    attempts: int


class JobBusyError(RuntimeError):
    pass


async def _db(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def run_manual(runtime: Runtime, spec: JobSpec, *, dry_run: bool = False,
                     force: bool = False, progress: ProgressSink | None = None,
                     heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                     rng: random.Random | None = None) -> ManualOutcome:
    clock = runtime.clock
    start = clock.now_ms()
    if dry_run:
        attempt = await execute_attempt(runtime, spec, asyncio.Event(), dry_run=True,
                                        progress=progress)
        return ManualOutcome(attempt, None, start, clock.now_ms(), 1)
    store = SchedulerStore(runtime.state)
    got = await _db(store.start_manual, spec.name, start, runtime.node,
                    None if force else spec.max_concurrent)
    if isinstance(got, Busy):
        raise JobBusyError(f"job {spec.name!r} is running now (node {got.node}, run "
                           f"{got.run_id}); --force runs it anyway")
    run_id, tick = got
    state = RunState(spec.name, tick, run_id, 1, "manual", asyncio.Event())

    async def beat() -> None:
        while True:
            await clock.sleep(heartbeat_s)
            with contextlib.suppress(Exception):
                await _db(store.heartbeat, [state.run_id], None, clock.now_ms())

    hb = asyncio.ensure_future(beat())
    fin: Finish | None
    try:
        fin, attempt = await run_attempts(runtime, spec, store, _db, state, runtime.node,
                                          rng or random.Random(), asyncio.Event(), progress)
    except asyncio.CancelledError:
        fin = Finish(state.run_id, "cancelled", clock.now_ms(), error="cancelled (interrupted)")
        attempt = Attempt("cancelled", None, "interrupted")
        await _db(store.finish_many, [fin])
        raise
    finally:
        hb.cancel()
    if fin is not None:
        await _db(store.finish_many, [fin])
    return ManualOutcome(attempt, state.run_id, start, clock.now_ms(), state.attempt)
