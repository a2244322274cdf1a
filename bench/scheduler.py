"""Scheduler benchmark: dispatch lag and the daemon's CPU share, busy and idle.

Busy: ``--jobs`` jobs (default 1,000) on a once-per-second schedule with a no-op job type
for ``--duration`` seconds. Reports dispatch lag (start time - scheduled time) p50/p99/max
as the engine saw it at launch, as the job body saw it when it began, and as recorded in
the state DB, plus the process's CPU share of one core and its RSS.
Idle: the same number of jobs with nothing due (a yearly schedule) for ``--idle``
seconds: the CPU share of heartbeats and the sleeping loop.

    python bench/scheduler.py                     # 60 s busy, 20 s idle, SQLite state
    python bench/scheduler.py --duration 5 --idle 5
    python bench/scheduler.py --state postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
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


class NoParams(Params):
    pass


BODY_LAGS: list[int] = []


async def noop(ctx: JobContext, _params: Any) -> JobResult:
    now = ctx.clock.now_ms()
    BODY_LAGS.append(now % 1000)  # ticks are on whole seconds; lag < 1 s (checked below)
    return JobResult()


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


async def phase(url: str, folder: Path, jobs: list[JobSpec], seconds: float,
                heartbeat: float) -> dict[str, Any]:
    rt = Runtime(Config(data_dir=folder, state=url), node="bench")
    eng = Engine(rt, jobs, EngineOptions(heartbeat_s=heartbeat, stop_timeout_s=10,
                                         record_lag=True, freeze_gc=True))
    task = asyncio.ensure_future(eng.run())
    await eng.started.wait()
    # Skip the first seconds: connection set-up and first-claim costs are not steady state.
    warmup = 2.0 if seconds > 4 else 0.0
    await asyncio.sleep(warmup)
    lag_from = len(eng.lags)
    BODY_LAGS.clear()
    c0, w0 = cpu_s(), time.monotonic()
    start_ms = int(time.time() * 1000)
    await asyncio.sleep(seconds)
    c1, w1 = cpu_s(), time.monotonic()
    end_ms = int(time.time() * 1000)
    rss = rss_mb()
    eng.request_stop(10)
    await task
    lags = eng.lags[lag_from:]
    with rt.state.engine.connect() as conn:
        db_lags = [int(x) for x in conn.execute(
            sa.select(t.runs.c.started_at - t.runs.c.scheduled_for).where(
                t.runs.c.scheduled_for >= start_ms, t.runs.c.scheduled_for < end_ms,
                t.runs.c.status == "success")).scalars()]
        skipped = int(conn.execute(sa.select(sa.func.count()).where(
            t.runs.c.status == "skipped")).scalar_one())
    body = list(BODY_LAGS)
    await rt.aclose()
    eng.store.dispose()
    return {
        "seconds": round(w1 - w0, 2), "cpu_share": (c1 - c0) / (w1 - w0),
        "runs": len(lags), "runs_per_s": len(lags) / (w1 - w0), "skipped_ticks": skipped,
        "lag_launch_ms": {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99),
                          "max": max(lags, default=0)},
        "lag_body_ms": {"p50": pct(body, 0.5), "p99": pct(body, 0.99),
                        "max": max(body, default=0)},
        "lag_db_ms": {"p50": pct(db_lags, 0.5), "p99": pct(db_lags, 0.99),
                      "max": max(db_lags, default=0),
                      "mean": round(statistics.fmean(db_lags), 2) if db_lags else None},
        "rss_mb": round(rss, 1), "max_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "statuses": dict(eng.stats.statuses), "db_errors": eng.stats.db_errors,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": args.jobs, "state": "sqlite" if args.state is None
                           else args.state.split("://", 1)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.duration > 0:
            url = make_state(folder, args.state, "busy")
            try:
                out["busy"] = await phase(url, folder, specs(args.jobs, "* * * * * *"),
                                          args.duration, args.heartbeat)
            finally:
                drop_state(url, args.state)
        if args.idle > 0:
            url = make_state(folder, args.state, "idle")
            try:
                out["idle"] = await phase(url, folder, specs(args.jobs, "0 0 1 1 *"),
                                          args.idle, args.heartbeat)
            finally:
                drop_state(url, args.state)
    return out


def report(r: dict[str, Any]) -> None:
    print(f"scheduler benchmark: {r['jobs']} jobs, state {r['state']}")
    if "busy" in r:
        b = r["busy"]
        print(f"  busy ({b['seconds']}s, once-per-second schedule, no-op job): "
              f"{b['runs_per_s']:.0f} runs/s, skipped ticks {b['skipped_ticks']}")
        for key, label in (("lag_launch_ms", "dispatch lag at launch"),
                           ("lag_body_ms", "dispatch lag at job start"),
                           ("lag_db_ms", "claim time - scheduled (DB started_at)")):
            lag = {k: float("nan") if v is None else v for k, v in b[key].items()}
            print(f"    {label:40s} p50 {lag['p50']:6.1f} ms  p99 {lag['p99']:6.1f} ms  "
                  f"max {lag['max']:6.1f} ms")
        print(f"    CPU {b['cpu_share']:.1%} of one core, RSS {b['rss_mb']} MB "
              f"(peak {b['max_rss_mb']} MB), statuses {b['statuses']}")
        if b["lag_launch_ms"]["max"] >= 1000:
            print("    note: launch lag reached 1 s; body lag (mod 1 s) under-reports")
    if "idle" in r:
        i = r["idle"]
        print(f"  idle ({i['seconds']}s, nothing due): CPU {i['cpu_share']:.2%} of one core, "
              f"RSS {i['rss_mb']} MB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0, help="busy phase seconds")
    p.add_argument("--idle", type=float, default=20.0, help="idle phase seconds")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--state", default=None, help="state DB URL (default: a temp SQLite)")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args()
    result = asyncio.run(main(ns))
    if ns.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        report(result)
