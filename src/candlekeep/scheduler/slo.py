"""``candlekeep slo``: per job, the share of its scheduled ticks that succeeded.

Ticks are counted from the schedules, not from history, so a tick nobody ran (daemon
down, skipped, lost) counts as a miss without needing a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.store import SchedulerStore
from candlekeep.scheduler.triggers import cron_trigger
from candlekeep.state import tables as t
from candlekeep.state.rows import JobRow, ScheduleRow
from candlekeep.state.statuses import LIVE_STATUSES, TICK_TRIGGERS

DAY_MS = 86_400_000


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
