"""What ``list``, ``status`` and ``slo`` show, computed from the state DB and the triggers.

Plain dicts out, so the CLI renders them as Rich tables or JSON alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from candlekeep.core.timeframes import parse_timeframe
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.describe import describe
from candlekeep.scheduler.misfire import fmt_duration
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import LIVE_STATUSES, SchedulerStore
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB

DAY_MS = 86_400_000
FAILING = ("failed", "timed_out", "abandoned")
TERMINAL = ("success", "failed", "timed_out", "cancelled", "abandoned", "skipped")


def relative(ts_ms: int | None, now_ms: int) -> str:
    if ts_ms is None:
        return "-"
    d = ts_ms - now_ms
    return f"in {fmt_duration(d)}" if d >= 0 else f"{fmt_duration(-d)} ago"


def _last_runs(state: StateDB, jobs: Sequence[str]) -> dict[str, Any]:
    c = t.runs.c
    latest = (sa.select(sa.func.max(c.id)).where(c.job.in_(list(jobs)), c.status != "skipped")
              .group_by(c.job))
    with state.engine.connect() as conn:
        return {r.job: r for r in conn.execute(sa.select(t.runs).where(c.id.in_(latest)))}


def _success_rates(state: StateDB, jobs: Sequence[str], since_ms: int) -> dict[str, tuple[int,
                                                                                       int]]:
    c = t.runs.c
    ok = sa.func.count(sa.distinct(c.scheduled_for)).filter(c.status == "success")
    done = sa.func.count(sa.distinct(c.scheduled_for)).filter(c.status.in_(TERMINAL))
    q = (sa.select(c.job, ok, done).where(c.job.in_(list(jobs)), c.scheduled_for >= since_ms)
         .group_by(c.job))
    with state.engine.connect() as conn:
        return {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(q)}


def job_overview(specs: Sequence[JobSpec], state: StateDB, now_ms: int) -> list[dict[str, Any]]:
    names = [s.name for s in specs]
    last = _last_runs(state, names) if names else {}
    rates = _success_rates(state, names, now_ms - 7 * DAY_MS) if names else {}
    out = []
    for s in specs:
        trig = s.trigger
        nxt = trig.next_after(now_ms) if trig is not None and s.enabled else None
        r = last.get(s.name)
        ok, done = rates.get(s.name, (0, 0))
        duration = (r.finished_at - r.started_at
                    if r is not None and r.finished_at and r.started_at else None)
        out.append({
            "name": s.name, "type": s.type, "schedule": trig.expr if trig else None,
            "timezone": trig.timezone if trig else None,
            "schedule_words": describe(trig.expr, trig.timezone) if trig else "manual only",
            "enabled": s.enabled, "next_run": nxt, "next_run_utc": fmt_ms(nxt) if nxt else None,
            "next_run_relative": relative(nxt, now_ms) if nxt else None,
            "last_status": r.status if r is not None else None,
            "last_scheduled_for": r.scheduled_for if r is not None else None,
            "last_duration_ms": duration,
            "success_rate_7d": (ok / done) if done else None, "runs_7d": done,
            "description": s.description,
        })
    return out


def live_nodes(store: SchedulerStore, now_ms: int) -> list[dict[str, Any]]:
    return [{"node": n.node, "host": n.host, "pid": n.pid, "status": n.status,
             "alive": n.alive(now_ms), "started_at": n.started_at,
             "heartbeat_at": n.heartbeat_at} for n in store.nodes()]


def stale_series(runtime: Runtime, now_ms: int) -> int | None:
    """Configured open-ended series more than two candles behind; None when unknown."""
    try:
        plans = [p for p in runtime.plans() if p.end_ms is None]
        latest: dict[Any, int] = {}
        for store_name in {p.store for p in plans}:
            for span in runtime.store(store_name).spans():
                latest[span.series] = span.last_ms
    except Exception:
        return None
    stale = 0
    for p in plans:
        tf = parse_timeframe(p.key.timeframe)
        last = latest.get(p.key)
        if last is None or tf.last_closed_open(now_ms) - last > 2 * tf.ms:
            stale += 1
    return stale


def health(runtime: Runtime, specs: Sequence[JobSpec], overview: Sequence[dict[str, Any]],
           daemon_up: bool, now_ms: int) -> dict[str, Any]:
    state = runtime.state
    store = SchedulerStore(state)
    nodes = live_nodes(store, now_ms)
    try:
        open_gaps: int | None = state.gap_counts().get("open", 0)
    except Exception:
        open_gaps = None
    return {
        "daemon_up": daemon_up or any(n["alive"] for n in nodes),
        "daemon_local": daemon_up,
        "live_nodes": [n["node"] for n in nodes if n["alive"]],
        "state_db_ms": round(state.ping_ms(), 2),
        "failing_jobs": [o["name"] for o in overview if o["last_status"] in FAILING],
        "open_gaps": open_gaps,
        "stale_series": stale_series(runtime, now_ms),
    }


def slo_report(specs: Sequence[JobSpec], store: SchedulerStore, days: float, target: float,
               now_ms: int) -> list[dict[str, Any]]:
    """Per scheduled job: ticks that ended in success / ticks that were due in the window.

    Ticks are counted from the trigger, not from history, so a tick nobody ran (daemon
    down, skipped, lost) counts as a miss without needing a row. The window starts no
    earlier than the job's first registration by a daemon; ticks still running are left
    out of both sides.
    """
    c = t.runs.c
    registered = {name: row.created_at for name, row in store.job_rows().items()}
    out = []
    for s in specs:
        if s.trigger is None or not s.enabled:
            continue
        start = max(now_ms - int(days * DAY_MS), registered.get(s.name, now_ms - int(days *
                                                                                  DAY_MS)))
        expected = s.trigger.count_between(start, now_ms)
        okq = sa.select(sa.func.count(sa.distinct(c.scheduled_for))).where(
            c.job == s.name, c.trigger == "schedule", c.scheduled_for > start,
            c.scheduled_for <= now_ms)
        with store.engine.connect() as conn:
            ok = int(conn.execute(okq.where(c.status == "success")).scalar_one())
            live = int(conn.execute(okq.where(c.status.in_(LIVE_STATUSES))).scalar_one())
        expected = max(expected - live, ok)
        share = ok / expected if expected else None
        out.append({"job": s.name, "schedule": s.trigger.expr, "since": start,
                    "expected_ticks": expected, "succeeded": ok, "missed": expected - ok,
                    "share": share, "target": target,
                    "met": None if share is None else share >= target})
    return out
