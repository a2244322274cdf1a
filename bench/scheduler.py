"""Scheduler benchmark: dispatch lag and CPU share, busy and idle, against APScheduler 3.

Why: a scheduler that keeps its state in a database has to show what that costs next to the
in-process scheduler most Python users would otherwise pick. So the same run measures
candlekeep's engine and APScheduler 3's ``AsyncIOScheduler``, one after the other in this
process, on the same workload, with the same warm-up, window and GC treatment.

Busy: ``--jobs`` jobs (default 1,000) on a once-per-second schedule with a no-op job body
for ``--duration`` seconds. Reports dispatch lag (start time - scheduled time) p50/p99/max:
for candlekeep as the engine saw it at launch, as the job body saw it when it began, and as
recorded in the state DB; for APScheduler as the job body saw it when it began (the figure
the two are compared on) and from the ``scheduled_run_time`` of its executed event. Plus
the process's CPU share of one core and its RSS.
Idle: the same number of jobs with nothing due (a yearly schedule) for ``--idle``
seconds: the CPU share of heartbeats and the sleeping loop.

Comparability:

- Ticks are on whole seconds for both (candlekeep ``* * * * * *``, APScheduler
  ``CronTrigger(second="*")``, UTC), so "lag at job start" is ``now_ms % 1000`` in the body
  for both. That is valid while lags stay under 1 s; the true lags (candlekeep's launch
  lag, APScheduler's lag from ``scheduled_run_time``) are reported beside it, and the
  comparison is flagged as not comparable when either reaches 1 s.
- APScheduler runs in its fastest configuration a user would pick: in-memory job store
  (``--apscheduler-store sqlite`` for its SQLAlchemyJobStore, the persistent one), the
  default ``AsyncIOExecutor``, which runs coroutine jobs as tasks on the loop. Every tick
  must run: ``misfire_grace_time=None`` (never dropped as late), ``coalesce=False`` (late
  ticks each run); ``max_instances=1`` matches candlekeep's no-overlap rule. Missed or
  skipped ticks it reports (events and log warnings) are counted and printed.
- candlekeep's jobs keep its default misfire policy (``coalesce``): a tick still unclaimed
  when the next one is due is recorded ``skipped`` and logged; both are counted (the
  warnings are captured, not printed, for both schedulers) and "ticks run" shows what ran.
- Order: candlekeep busy, APScheduler busy, candlekeep idle, APScheduler idle. Before each
  phase the GC is reset (``gc.unfreeze()``, ``gc.collect()``); after start-up each phase
  freezes it (``gc.collect()``, ``gc.freeze()``: candlekeep's daemon does this through
  ``EngineOptions.freeze_gc``, for APScheduler the script does it right after ``start()``).
  ``--gc default`` leaves the GC alone in both. Automatic collection stays on either way.
- Each phase skips its first 2 s (connection set-up, first claims) when the window is
  longer than 4 s, then measures CPU and wall time over the same ``--duration``/``--idle``.
  The load average is printed: other processes on the machine show up as lag.

    pip install -e '.[bench]'                     # APScheduler 3 for the comparison
    python bench/scheduler.py                     # 60 s busy, 20 s idle, SQLite state
    python bench/scheduler.py --duration 5 --idle 5
    python bench/scheduler.py --apscheduler-store sqlite
    python bench/scheduler.py --state postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from candlekeep.config.models import Config
from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.engine import Engine, EngineOptions
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import cron_trigger
from candlekeep.state import tables as t

try:  # optional: the `bench` extra; the candlekeep phases run without it
    import apscheduler
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
    )
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger
except ImportError:  # pragma: no cover - depends on the environment
    apscheduler = None

INSTALL_HINT = "pip install -e '.[bench]'"
WARMUP_S = 2.0


class NoParams(Params):
    pass


BODY_LAGS: list[int] = []


async def noop(ctx: JobContext, _params: Any) -> JobResult:
    now = ctx.clock.now_ms()
    BODY_LAGS.append(now % 1000)  # ticks are on whole seconds; lag < 1 s (checked below)
    return JobResult()


APS_BODY_LAGS: list[int] = []


async def aps_noop() -> int:
    """APScheduler's job body: the same measurement as :func:`noop`. It returns its start
    time so the executed-event listener can compute the true lag (not mod 1 s)."""
    now = time.time_ns() // 1_000_000
    APS_BODY_LAGS.append(now % 1000)
    return now


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def summary(values: list[int]) -> dict[str, float | None]:
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99),
            "max": float(max(values)) if values else None}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_gc() -> None:
    """Each phase starts from the same GC state, whatever the previous one froze."""
    gc.unfreeze()
    gc.collect()


@dataclass(slots=True)
class Window:
    """One measured interval: CPU seconds, wall seconds, wall-clock bounds (epoch ms)."""

    cpu: float = 0.0
    wall: float = 0.0
    start_ms: int = 0
    end_ms: int = 0
    rss: float = 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0

    def ticks(self) -> int:
        """Whole seconds inside [start_ms, end_ms): the once-a-second ticks each job owes."""
        return (self.end_ms - 1) // 1000 - (self.start_ms - 1) // 1000


async def measure(seconds: float, on_start: Callable[[], None]) -> Window:
    """Skip the warm-up, let the phase reset its per-run records (``on_start``), then time
    ``seconds`` of the loop. The caller snapshots its records right after this returns,
    with no await in between, so records and CPU cover the same window."""
    await asyncio.sleep(WARMUP_S if seconds > 4 else 0.0)
    on_start()
    w = Window()
    c0, w0 = cpu_s(), time.monotonic()
    w.start_ms = time.time_ns() // 1_000_000
    await asyncio.sleep(seconds)
    c1, w1 = cpu_s(), time.monotonic()
    w.end_ms = time.time_ns() // 1_000_000
    w.cpu, w.wall, w.rss = c1 - c0, w1 - w0, rss_mb()
    return w


class _Counting(logging.Handler):
    """Counts a scheduler's warnings (skipped or missed ticks, max instances reached) and
    keeps a few, so the report shows whether it dropped ticks instead of flooding stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def reset(self) -> None:
        self.count = 0
        self.samples.clear()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 3:
            self.samples.append(record.getMessage())


# -- candlekeep --------------------------------------------------------------------------


def specs(n: int, schedule: str) -> list[JobSpec]:
    jt = JobType("noop", NoParams, noop)
    trig = cron_trigger(schedule)
    return [JobSpec(name=f"bench.{i:05d}", type="noop", job_type=jt, params=NoParams(),
                    trigger=trig) for i in range(n)]


def make_state(folder: Path, state: str | None, tag: str) -> str:
    if state is None:
        return f"sqlite:///{folder / f'{tag}.db'}"
    if state.startswith(("postgresql://", "postgres://")):
        # A fresh schema-free database per phase keeps runs from earlier phases out.
        import psycopg

        name = f"ck_bench_{tag}_{int(time.time())}"
        with psycopg.connect(state, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{state.rsplit('/', 1)[0]}/{name}"
    return state


def drop_state(url: str, admin: str | None) -> None:
    if admin and url.startswith(("postgresql://", "postgres://")) and url != admin:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def running_engine(rt: Runtime, jobs: list[JobSpec], heartbeat: float,
                         freeze_gc: bool) -> AsyncIterator[Engine]:
    """The one place this script drives candlekeep's engine API: start it, wait until it
    has started (and frozen the GC), hand it over, stop it and wait for the drain. Adapt
    here when the engine's API changes."""
    eng = Engine(rt, jobs, EngineOptions(heartbeat_s=heartbeat, stop_timeout_s=10,
                                         record_lag=True, freeze_gc=freeze_gc))
    task = asyncio.ensure_future(eng.run())
    await eng.started.wait()
    try:
        yield eng
    finally:
        eng.request_stop(10)
        await task
        eng.store.dispose()


async def phase(url: str, folder: Path, jobs: list[JobSpec], seconds: float,
                heartbeat: float, freeze_gc: bool = True, busy: bool = True) -> dict[str, Any]:
    rt = Runtime(Config(data_dir=folder, state=url), node="bench")
    warnings = _Counting()
    ck_log = logging.getLogger("candlekeep")
    ck_log.addHandler(warnings)
    try:
        async with running_engine(rt, jobs, heartbeat, freeze_gc) as eng:
            lag_from = 0

            def on_start() -> None:
                nonlocal lag_from
                lag_from = len(eng.lags)
                BODY_LAGS.clear()
                warnings.reset()

            w = await measure(seconds, on_start)
            body = list(BODY_LAGS)
            lags = eng.lags[lag_from:]
            n_warn, samples = warnings.count, list(warnings.samples)
    finally:
        ck_log.removeHandler(warnings)
    with rt.state.engine.connect() as conn:
        db_lags = [int(x) for x in conn.execute(
            sa.select(t.runs.c.started_at - t.runs.c.scheduled_for).where(
                t.runs.c.scheduled_for >= w.start_ms, t.runs.c.scheduled_for < w.end_ms,
                t.runs.c.status == "success")).scalars()]
        skipped = int(conn.execute(sa.select(sa.func.count()).where(
            t.runs.c.status == "skipped")).scalar_one())
    await rt.aclose()
    return {
        "seconds": round(w.wall, 2), "cpu_share": w.cpu_share,
        "runs": len(lags), "runs_per_s": len(lags) / w.wall, "skipped_ticks": skipped,
        "ticks_due": w.ticks() * len(jobs) if busy else 0, "ticks_run": len(db_lags),
        "lag_launch_ms": summary(lags),
        "lag_body_ms": summary(body),
        "lag_db_ms": {**summary(db_lags),
                      "mean": round(statistics.fmean(db_lags), 2) if db_lags else None},
        "rss_mb": round(w.rss, 1), "max_rss_mb": max_rss_mb(),
        "statuses": dict(eng.stats.statuses), "db_errors": eng.stats.db_errors,
        "warnings": n_warn, "warning_samples": samples,
    }


# -- APScheduler 3 -----------------------------------------------------------------------


async def aps_phase(store: str, folder: Path, n: int, busy: bool, seconds: float,
                    freeze_gc: bool, tag: str) -> dict[str, Any]:
    """APScheduler 3 ``AsyncIOScheduler`` with ``n`` coroutine jobs on this loop."""
    if store == "sqlite":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        jobstore: Any = SQLAlchemyJobStore(url=f"sqlite:///{folder / f'aps_{tag}.db'}")
    else:
        from apscheduler.jobstores.memory import MemoryJobStore

        jobstore = MemoryJobStore()
    sched = AsyncIOScheduler(timezone=UTC, jobstores={"default": jobstore}, job_defaults={
        "misfire_grace_time": None, "coalesce": False, "max_instances": 1})
    true_lags: list[int] = []
    scheduled: list[int] = []  # scheduled_run_time (epoch ms) of each executed run
    events: Counter[str] = Counter()
    names = {EVENT_JOB_EXECUTED: "executed", EVENT_JOB_ERROR: "error",
             EVENT_JOB_MISSED: "missed", EVENT_JOB_MAX_INSTANCES: "max_instances"}

    def listener(ev: Any) -> None:
        events[names[ev.code]] += 1
        if ev.code == EVENT_JOB_EXECUTED:
            sched_ms = round(ev.scheduled_run_time.timestamp() * 1000)
            scheduled.append(sched_ms)
            true_lags.append(ev.retval - sched_ms)

    sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
                       | EVENT_JOB_MAX_INSTANCES)
    warnings = _Counting()
    aps_log = logging.getLogger("apscheduler")
    aps_log.addHandler(warnings)

    def on_start() -> None:
        for lst in (APS_BODY_LAGS, true_lags, scheduled):
            lst.clear()
        events.clear()
        warnings.reset()

    trigger = (CronTrigger(second="*", timezone=UTC) if busy else
               CronTrigger(month=1, day=1, hour=0, minute=0, second=0, timezone=UTC))
    for i in range(n):
        sched.add_job(aps_noop, trigger, id=f"bench.{i:05d}", name=f"bench.{i:05d}")
    sched.start()
    if freeze_gc:
        gc.collect()
        gc.freeze()
    try:
        w = await measure(seconds, on_start)
        body, lags, counts = list(APS_BODY_LAGS), list(true_lags), dict(events)
        if busy:  # let the window's last tick finish before counting what ran
            await asyncio.sleep(1.0)
        in_window = sum(w.start_ms <= x < w.end_ms for x in scheduled)
        n_warn, samples = warnings.count, list(warnings.samples)
    finally:
        sched.shutdown(wait=False)
        await asyncio.sleep(0.2)  # shutdown is scheduled on the loop; let it run
        aps_log.removeHandler(warnings)
        if store == "sqlite":
            jobstore.engine.dispose()
    return {
        "seconds": round(w.wall, 2), "cpu_share": w.cpu_share,
        "runs": len(body), "runs_per_s": len(body) / w.wall,
        "ticks_due": w.ticks() * n if busy else 0, "ticks_run": in_window,
        "missed_ticks": counts.get("missed", 0) + counts.get("max_instances", 0),
        "events": counts, "warnings": n_warn, "warning_samples": samples,
        "lag_body_ms": summary(body), "lag_true_ms": summary(lags),
        "rss_mb": round(w.rss, 1), "max_rss_mb": max_rss_mb(),
    }


# -- main --------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(a / max(b, 1.0), 2)  # lags are whole ms: a 0 ms p99 counts as 1 ms


async def main(args: argparse.Namespace) -> dict[str, Any]:
    freeze = args.gc == "freeze"
    out: dict[str, Any] = {"jobs": args.jobs, "state": "sqlite" if args.state is None
                           else args.state.split("://", 1)[0], "gc": args.gc,
                           "warmup_s": WARMUP_S, "cpus": os.cpu_count(),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    aps: dict[str, Any] | None = None
    if args.apscheduler_store != "none":
        if apscheduler is None:
            aps = {"error": f"apscheduler is not installed: {INSTALL_HINT}"}
            print(f"note: APScheduler 3 not installed, comparison skipped ({INSTALL_HINT})",
                  file=sys.stderr)
        else:
            aps = {"version": apscheduler.__version__, "store": args.apscheduler_store,
                   "executor": "asyncio (default)"}
        out["apscheduler"] = aps
    run_aps = aps is not None and "error" not in aps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, busy, seconds, schedule in (("busy", True, args.duration, "* * * * * *"),
                                              ("idle", False, args.idle, "0 0 1 1 *")):
            if seconds <= 0:
                continue
            reset_gc()
            url = make_state(folder, args.state, name)
            try:
                out[name] = await phase(url, folder, specs(args.jobs, schedule), seconds,
                                        args.heartbeat, freeze, busy)
            except Exception as exc:  # e.g. mid-refactor engine: still measure APScheduler
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"candlekeep {name} phase failed: {out[name]['error']}", file=sys.stderr)
            finally:
                drop_state(url, args.state)
            if run_aps and aps is not None:
                reset_gc()
                aps[name] = await aps_phase(args.apscheduler_store, folder, args.jobs, busy,
                                            seconds, freeze, name)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    ck_busy_ok = "busy" in out and "error" not in out["busy"]
    if run_aps and aps is not None and "busy" in aps and ck_busy_ok:
        ck, ap = out["busy"]["lag_body_ms"], aps["busy"]["lag_body_ms"]
        over = [who for who, mx in (("candlekeep", out["busy"]["lag_launch_ms"]["max"]),
                                    ("apscheduler", aps["busy"]["lag_true_ms"]["max"]))
                if (mx or 0) >= 1000]
        out["comparison"] = {
            # body lag is taken mod 1 s: once a side lags a whole second, it under-reports
            "body_lag_valid": not over, "lag_over_1s": over,
            "body_lag_p50_ratio": ratio(ck["p50"], ap["p50"]),
            "body_lag_p99_ratio": ratio(ck["p99"], ap["p99"]),
            "busy_cpu_ratio": round(out["busy"]["cpu_share"] / aps["busy"]["cpu_share"], 2)
            if aps["busy"]["cpu_share"] else None,
        }
    return out


def _fmt_lag(label: str, lag: dict[str, Any]) -> str:
    v = {k: float("nan") if x is None else x for k, x in lag.items()}
    return (f"    {label:40s} p50 {v['p50']:6.1f} ms  p99 {v['p99']:6.1f} ms  "
            f"max {v['max']:6.1f} ms")


def report(r: dict[str, Any]) -> None:
    print(f"scheduler benchmark: {r['jobs']} jobs, state {r['state']}, GC {r['gc']}, "
          f"warm-up {r['warmup_s']:.0f} s per phase; {r['cpus']} CPUs, load average "
          f"{r['loadavg_before'][0]} before, {r['loadavg_after'][0]} after")
    for name in ("busy", "idle"):
        if "error" in r.get(name, {}):
            print(f"  candlekeep {name}: FAILED {r[name]['error']}")
    if "busy" in r and "error" not in r["busy"]:
        b = r["busy"]
        print(f"  candlekeep busy ({b['seconds']}s, once-per-second schedule, no-op job): "
              f"{b['runs_per_s']:.0f} runs/s, ticks run {b['ticks_run']}/{b['ticks_due']}, "
              f"skipped ticks {b['skipped_ticks']}")
        for key, label in (("lag_launch_ms", "dispatch lag at launch"),
                           ("lag_body_ms", "dispatch lag at job start"),
                           ("lag_db_ms", "claim time - scheduled (DB started_at)")):
            print(_fmt_lag(label, b[key]))
        print(f"    CPU {b['cpu_share']:.1%} of one core, RSS {b['rss_mb']} MB "
              f"(peak {b['max_rss_mb']} MB), statuses {b['statuses']}, "
              f"warnings logged {b['warnings']}")
        for msg in b["warning_samples"]:
            print(f"    warning: {msg}")
        if (b["lag_launch_ms"]["max"] or 0) >= 1000:
            print("    note: launch lag reached 1 s; body lag (mod 1 s) under-reports")
    aps = r.get("apscheduler")
    if aps and "error" not in aps and "busy" in aps:
        a = aps["busy"]
        print(f"  APScheduler {aps['version']} busy ({a['seconds']}s, AsyncIOScheduler, "
              f"{aps['store']} job store, same jobs): {a['runs_per_s']:.0f} runs/s, "
              f"ticks run {a['ticks_run']}/{a['ticks_due']}, "
              f"missed {a['missed_ticks']}, warnings logged {a['warnings']}")
        print(_fmt_lag("dispatch lag at job start", a["lag_body_ms"]))
        print(_fmt_lag("scheduled_run_time -> job start", a["lag_true_ms"]))
        print(f"    CPU {a['cpu_share']:.1%} of one core, RSS {a['rss_mb']} MB "
              f"(peak {a['max_rss_mb']} MB)")
        for msg in a["warning_samples"]:
            print(f"    warning: {msg}")
        if (a["lag_true_ms"]["max"] or 0) >= 1000:
            print("    note: lag reached 1 s; body lag (mod 1 s) under-reports")
    if "idle" in r and "error" not in r["idle"]:
        i = r["idle"]
        print(f"  candlekeep idle ({i['seconds']}s, nothing due): CPU {i['cpu_share']:.2%} "
              f"of one core, RSS {i['rss_mb']} MB")
    if aps and "error" not in aps and "idle" in aps:
        i = aps["idle"]
        print(f"  APScheduler idle ({i['seconds']}s, nothing due): CPU {i['cpu_share']:.2%} "
              f"of one core, RSS {i['rss_mb']} MB")
    if aps and "error" in aps:
        print(f"  APScheduler comparison skipped: {aps['error']}")
    if "comparison" in r:
        c = r["comparison"]
        print(f"  candlekeep / APScheduler: body lag p50 {c['body_lag_p50_ratio']}x, "
              f"p99 {c['body_lag_p99_ratio']}x, busy CPU {c['busy_cpu_ratio']}x")
        if not c["body_lag_valid"]:
            print(f"    not comparable: {', '.join(c['lag_over_1s'])} lagged 1 s or more, "
                  "so its body lag (mod 1 s) under-reports; see the true lags above")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0, help="busy phase seconds")
    p.add_argument("--idle", type=float, default=20.0, help="idle phase seconds")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--state", default=None, help="state DB URL (default: a temp SQLite)")
    p.add_argument("--apscheduler-store", choices=("memory", "sqlite", "none"),
                   default="memory", help="APScheduler 3 job store ('none' skips it)")
    p.add_argument("--gc", choices=("freeze", "default"), default="freeze",
                   help="freeze the GC after each phase's start-up (as the daemon does)")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    result = asyncio.run(main(ns))
    if ns.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        report(result)
