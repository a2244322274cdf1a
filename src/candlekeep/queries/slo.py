"""``candlekeep slo``: per job, its objective (a share of runs that must succeed over a
rolling window) against the run history in the state DB.

A job's objective is, first found: ``--target``/``--window`` on the command line, the job's
``slo:`` block, its job type's default (``@job_type(..., slo=...)``; the daily
``availability`` job has 95 %), else 95 % over 30 days. Every enabled scheduled job is
listed; a job run only by hand is listed when it has an objective of its own or its type's.

How runs count:

- A scheduled job owes every tick of its schedule in the window, counted from the schedule
  history (``scheduler_schedules``: each period with the schedule it had, from the job's
  first appearance), so a tick nobody ran (daemon down, lost) is a miss without needing a
  row. A tick succeeded when any attempt did; it failed when an attempt ended failed, timed
  out or abandoned; a tick whose only rows are ``skipped`` (a timer tick while the job was
  still running, a misfire skipped) or ``cancelled`` did not do its work either, so it is a
  miss too (counted apart). Ticks still running or waiting for a retry are left out of
  both sides. Manual runs of a scheduled job do not count: its ticks are what it owes.
- A job run only by hand owes nothing: each run that ended succeeded or failed counts;
  skipped and cancelled runs are left out (they say nothing about whether the job works).

The error budget is how many more misses the window may take: ``floor((1 - target) *
counted) - missed``; the objective is met while it is not negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from candlekeep.config.models import Config, SloConfig
from candlekeep.core.timeutil import iso_ms
from candlekeep.queries.jobs import FAILING, as_known
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import cron_trigger
from candlekeep.state.reader import Reader
from candlekeep.state.rows import JobRow, ScheduleRow
from candlekeep.state.statuses import LIVE_STATUSES, TICK_TRIGGERS, RunStatus

DEFAULT_SLO = SloConfig()
"""95 % over 30 days: a job without an objective of its own is held to this."""


class SloSource(StrEnum):
    """Where a job's objective comes from."""

    FLAG = "flag"
    """``--target`` / ``--window`` on the command line."""
    JOB = "job"
    """The job's ``slo:`` block."""
    JOB_TYPE = "job_type"
    """The job type's default."""
    DEFAULT = "default"
    """Neither: DEFAULT_SLO."""


class Basis(StrEnum):
    TICKS = "ticks"
    """The schedule's ticks in the window (a scheduled job)."""
    RUNS = "runs"
    """The runs that ended in the window (a job run only by hand)."""


@dataclass(frozen=True, slots=True)
class Objective:
    target: float
    window_ms: int
    set_by: SloSource


def objective(spec: JobSpec, config: SloConfig | None, *, target: float | None = None,
              window_ms: int | None = None) -> Objective:
    """The objective ``spec`` is held to; ``config`` is its job's ``slo:`` block."""
    own = config or spec.job_type.slo
    base = own or DEFAULT_SLO
    source = (SloSource.JOB if config is not None else
              SloSource.JOB_TYPE if own is not None else SloSource.DEFAULT)
    if target is not None or window_ms is not None:
        source = SloSource.FLAG
    return Objective(base.target if target is None else target,
                     int(base.window * 1000) if window_ms is None else window_ms, source)


@dataclass(frozen=True, slots=True)
class SloView:
    """One job's objective and how its window measures up."""

    job: str
    type: str
    schedule: str | None
    target: float
    window_ms: int
    set_by: SloSource
    basis: Basis
    since: int | None
    """Where counting starts: the window's start, or the job's first appearance when later
    (epoch ms); None: no daemon or run has registered the job yet."""
    since_utc: str | None
    expected_ticks: int
    """What counts: ticks due (a scheduled job, less those still live) or runs that ended
    succeeded or failed (a manual job)."""
    succeeded: int
    failed: int
    """Counted ticks (or runs) that ended failed, timed out or abandoned."""
    skipped: int
    """Ticks whose only rows are skipped or cancelled (a miss); for a manual job, skipped
    and cancelled runs, which do not count."""
    not_run: int
    """Ticks due that have no run at all (daemon down)."""
    missed: int
    """``expected_ticks - succeeded``."""
    share: float | None
    allowed_misses: int
    budget_left: int
    """Misses the window can still take; negative: over budget."""
    met: bool | None
    """None when nothing counts yet."""
    last_failure_at: int | None
    last_failure_utc: str | None
    last_failure_status: RunStatus | str | None
    last_failure_error: str | None


@dataclass(frozen=True, slots=True)
class _Tally:
    ticks: int
    ok: int
    live: int
    bad: int

    @property
    def rest(self) -> int:
        """Ticks with neither success, live nor failed rows: skipped or cancelled only."""
        return self.ticks - self.ok - self.live - self.bad


def slo_views(specs: Sequence[JobSpec], config: Config, reader: Reader, now_ms: int, *,
              target: float | None = None, window_ms: int | None = None) -> list[SloView]:
    """One view per enabled job that has an objective to show, in config order: every
    scheduled job, and manual ones with an objective of their own or their type's."""
    chosen: list[tuple[JobSpec, Objective]] = []
    for s in specs:
        if not s.enabled:
            continue
        job = config.job(s.name)
        own = job.slo if job is not None else None
        obj = objective(s, own, target=target, window_ms=window_ms)
        if s.trigger is not None or own is not None or s.job_type.slo is not None:
            chosen.append((s, obj))
    if not chosen:
        return []
    periods = _schedules(reader, [s.name for s, _ in chosen])
    rows = reader.job_rows()
    out = []
    for s, obj in chosen:
        window = now_ms - obj.window_ms
        if s.trigger is not None:
            history = periods.get(s.name) or _legacy_period(rows.get(s.name))
            due, since = due_ticks(history, window, now_ms)
        else:
            due, since = 0, window
        out.append(_view(s, obj, reader, due, since, now_ms))
    return out


def _view(s: JobSpec, obj: Objective, reader: Reader, due: int, since: int | None,
          now_ms: int) -> SloView:
    scheduled = s.trigger is not None
    t = _tally(reader, s.name, since, now_ms, scheduled) if since is not None else \
        _Tally(0, 0, 0, 0)
    if scheduled:
        expected = max(due - t.live, t.ok + t.bad + t.rest)
        skipped = t.rest
        not_run = expected - t.ok - t.bad - t.rest
    else:
        expected, skipped, not_run = t.ok + t.bad, t.rest, 0
    missed = expected - t.ok
    allowed = math.floor((1 - obj.target) * expected + 1e-9)
    budget = allowed - missed
    fail = reader.runs(job=s.name, since_ms=since, status=[f.value for f in FAILING],
                       limit=1) if since is not None else []
    last = fail[0] if fail else None
    at = None if last is None else last.finished_at or last.started_at or last.scheduled_for
    return SloView(
        job=s.name, type=s.type, schedule=s.trigger.expr if s.trigger else None,
        target=obj.target, window_ms=obj.window_ms, set_by=obj.set_by,
        basis=Basis.TICKS if scheduled else Basis.RUNS, since=since, since_utc=iso_ms(since),
        expected_ticks=expected, succeeded=t.ok, failed=t.bad, skipped=skipped,
        not_run=not_run, missed=missed, share=t.ok / expected if expected else None,
        allowed_misses=allowed, budget_left=budget, met=budget >= 0 if expected else None,
        last_failure_at=at, last_failure_utc=iso_ms(at),
        last_failure_status=as_known(RunStatus, last.status) if last else None,
        last_failure_error=last.error if last else None)


def _tally(reader: Reader, job: str, since: int, now_ms: int, ticks_only: bool) -> _Tally:
    """Per tick (``scheduled_for``; a retry shares its tick) in ``(since, now]``: whether an
    attempt succeeded, is live, or failed; summed in one statement over the job's range of
    the ``(job, scheduled_for, attempt)`` index."""
    params: dict[str, object] = {"job": job, "since": since, "now": now_ms}
    triggers = ""
    if ticks_only:
        names = []
        for i, trig in enumerate(TICK_TRIGGERS):
            params[f"t{i}"] = trig.value
            names.append(f":t{i}")
        triggers = f'AND "trigger" IN ({", ".join(names)}) '
    live = ", ".join(f"'{s.value}'" for s in LIVE_STATUSES)
    bad = ", ".join(f"'{s.value}'" for s in FAILING)
    (ticks, ok, lv, fl), = reader.rows(
        "SELECT COUNT(*), SUM(ok), SUM(CASE WHEN ok = 0 AND live = 1 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN ok = 0 AND live = 0 AND bad = 1 THEN 1 ELSE 0 END) FROM ("
        "SELECT scheduled_for, MAX(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS ok, "
        f"MAX(CASE WHEN status IN ({live}) THEN 1 ELSE 0 END) AS live, "
        f"MAX(CASE WHEN status IN ({bad}) THEN 1 ELSE 0 END) AS bad "
        f"FROM runs WHERE job = :job {triggers}AND scheduled_for > :since "
        "AND scheduled_for <= :now GROUP BY scheduled_for) g", params)
    return _Tally(int(ticks), int(ok or 0), int(lv or 0), int(fl or 0))


def _schedules(reader: Reader, jobs: Sequence[str]) -> dict[str, list[ScheduleRow]]:
    """Each job's schedule history, oldest period first."""
    params = {f"j{i}": j for i, j in enumerate(jobs)}
    names = ", ".join(f":{k}" for k in params)
    out: dict[str, list[ScheduleRow]] = {}
    for r in reader.rows("SELECT job, since, schedule, timezone, enabled FROM "
                         f"scheduler_schedules WHERE job IN ({names}) ORDER BY job, since",
                         params):
        out.setdefault(r[0], []).append(ScheduleRow(r[0], int(r[1]), r[2], r[3], bool(r[4])))
    return out


def _legacy_period(row: JobRow | None) -> list[ScheduleRow]:
    """A job registered before schedules had a history: one period from its creation."""
    if row is None or row.schedule is None:
        return []
    return [ScheduleRow(row.job, row.created_at, row.schedule, row.timezone, True)]


def due_ticks(periods: Sequence[ScheduleRow], window: int,
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

