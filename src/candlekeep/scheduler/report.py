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
from candlekeep.scheduler.records import JobRow, ScheduleRow
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.scheduler.triggers import cron_trigger
from candlekeep.state import tables as t
from candlekeep.state.db import StateDB
from candlekeep.state.scheduler_tables import scheduler_jobs
from candlekeep.state.tables import LIVE_STATUSES, TICK_TRIGGERS

DAY_MS = 86_400_000
FAILING = ("failed", "timed_out", "abandoned")
TERMINAL = ("success", "failed", "timed_out", "cancelled", "abandoned", "skipped")


def relative(ts_ms: int | None, now_ms: int) -> str:
    if ts_ms is None:
        return "-"
    d = ts_ms - now_ms
    return f"in {fmt_duration(d)}" if d >= 0 else f"{fmt_duration(-d)} ago"


def _last_runs(state: StateDB, jobs: Sequence[str]) -> dict[str, Any]:
    """Each job's latest started run, one index probe per job (``ix_runs_job_started``,
    driven by the jobs table), never a pass over the history."""
    c, jc = t.runs.c, scheduler_jobs.c
    latest = (sa.select(c.id).where(c.job == jc.job, c.started_at.is_not(None))
              .order_by(c.started_at.desc()).limit(1).correlate(scheduler_jobs)
              .scalar_subquery())
    with state.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(latest).where(jc.job.in_(list(jobs))))
               if r[0] is not None]
        if not ids:
            return {}
        return {r.job: r for r in conn.execute(sa.select(t.runs).where(c.id.in_(ids)))}


def _success_rates(state: StateDB, jobs: Sequence[str], since_ms: int) -> dict[str, tuple[int,
                                                                                       int]]:
    """Ticks that succeeded / ticks that ended, per job, in the window only (the unique
    ``(job, scheduled_for, attempt)`` index bounds the read to it)."""
    c = t.runs.c
    ok = sa.func.count(sa.distinct(c.scheduled_for)).filter(c.status == "success")
    done = sa.func.count(sa.distinct(c.scheduled_for)).filter(c.status.in_(TERMINAL))
    q = (sa.select(c.job, ok, done).where(c.job.in_(list(jobs)), c.scheduled_for >= since_ms)
         .group_by(c.job))
    with state.engine.connect() as conn:
        return {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(q)}


def job_overview(specs: Sequence[JobSpec], store: SchedulerStore,
                 now_ms: int) -> list[dict[str, Any]]:
    names = [s.name for s in specs]
    state = store.state
    last = _last_runs(state, names) if names else {}
    rates = _success_rates(state, names, now_ms - 7 * DAY_MS) if names else {}
    rows = store.job_rows()
    out = []
    for s in specs:
        trig = s.trigger
        nxt = trig.next_after(now_ms) if trig is not None and s.enabled else None
        r = last.get(s.name)
        ok, done = rates.get(s.name, (0, 0))
        duration = (r.finished_at - r.started_at
                    if r is not None and r.finished_at and r.started_at else None)
        jr = rows.get(s.name)
        known = jr is not None and jr.spec_hash is not None
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
            "spec_matches": (jr.spec_hash == s.digest) if known and jr else None,
            "spec_set_by": jr.spec_by if jr is not None else None,
            "spec_set_at": jr.spec_at if jr is not None else None,
        })
    return out


def live_nodes(store: SchedulerStore, now_ms: int) -> list[dict[str, Any]]:
    return [{"node": n.node, "host": n.host, "pid": n.pid, "instance": n.instance,
             "status": n.status, "alive": n.alive(now_ms), "started_at": n.started_at,
             "heartbeat_at": n.heartbeat_at, "skew_ms": n.skew_ms,
             "conflicts": list(n.conflicts)} for n in store.nodes()]


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


def health(runtime: Runtime, store: SchedulerStore, overview: Sequence[dict[str, Any]],
           daemon_up: bool, now_ms: int) -> dict[str, Any]:
    state = runtime.state
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
        "disagreements": [{"node": n["node"], "jobs": n["conflicts"]} for n in nodes
                          if n["alive"] and n["conflicts"]],
        "config_differs": [o["name"] for o in overview if o["spec_matches"] is False],
    }


def slo_report(specs: Sequence[JobSpec], store: SchedulerStore, days: float, target: float,
               now_ms: int) -> list[dict[str, Any]]:
    """Per scheduled job: ticks that ended in success / ticks that were due in the window.

    Ticks are counted from the schedules, not from history, so a tick nobody ran (daemon
    down, skipped, lost) counts as a miss without needing a row. Each period counts with
    the schedule the job had then (``scheduler_schedules``), from the job's first
    appearance, so a job configured a minute ago owes nothing for the month before and a
    schedule change does not re-count the past. Runs for a tick count whether a daemon or
    an installed timer started them; ticks still running are left out of both sides.
    """
    c = t.runs.c
    history = store.schedules()
    rows = store.job_rows()
    window = now_ms - int(days * DAY_MS)
    out = []
    for s in specs:
        if s.trigger is None or not s.enabled:
            continue
        periods = history.get(s.name) or _legacy_period(rows.get(s.name))
        expected, since = _due_ticks(periods, window, now_ms)
        ok = live = 0
        if since is not None:
            okq = sa.select(sa.func.count(sa.distinct(c.scheduled_for))).where(
                c.job == s.name, c.trigger.in_(list(TICK_TRIGGERS)), c.scheduled_for > since,
                c.scheduled_for <= now_ms)
            with store.engine.connect() as conn:
                ok = int(conn.execute(okq.where(c.status == "success")).scalar_one())
                live = int(conn.execute(okq.where(
                    c.status.in_(list(LIVE_STATUSES)))).scalar_one())
        expected = max(expected - live, ok)
        share = ok / expected if expected else None
        out.append({"job": s.name, "schedule": s.trigger.expr, "since": since,
                    "expected_ticks": expected, "succeeded": ok, "missed": expected - ok,
                    "share": share, "target": target,
                    "met": None if share is None else share >= target})
    return out


def _legacy_period(row: JobRow | None) -> list[ScheduleRow]:
    """A job registered before schedules had a history: one period from its creation."""
    if row is None or row.schedule is None:
        return []
    return [ScheduleRow(row.job, row.created_at, row.schedule, row.timezone, True)]


def _due_ticks(periods: Sequence[ScheduleRow], window: int,
               now_ms: int) -> tuple[int, int | None]:
    """Ticks due in ``(max(window, first appearance), now]`` under each period's schedule,
    and where that count starts (None: the job has not appeared yet)."""
    if not periods:
        return 0, None
    expected = 0
    for i, p in enumerate(periods):
        lo = max(p.since, window)
        hi = periods[i + 1].since if i + 1 < len(periods) else now_ms
        if hi <= lo or not p.enabled or p.schedule is None:
            continue
        expected += cron_trigger(p.schedule, p.timezone or "UTC").count_between(lo, hi)
    return expected, max(periods[0].since, window)
