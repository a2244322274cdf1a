"""Jobs, their runs and the daemons that run them: what ``list``, ``status``, ``history``,
``/jobs``, ``/runs`` and the dashboard show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from candlekeep.core.timeframes import DAY_MS
from candlekeep.core.timeutil import fmt_duration, fmt_ms, iso_ms
from candlekeep.scheduler.describe import describe
from candlekeep.scheduler.spec import JobSpec
from candlekeep.state.reader import Reader
from candlekeep.state.rows import RunRow
from candlekeep.state.statuses import RunStatus, Trigger

FAILING = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED)
"""A job whose latest run ended so counts as failing."""
E = TypeVar("E", bound=StrEnum)


def as_known(kind: type[E], value: str) -> E | str:
    """``value`` as a member of ``kind``, or as written when this version does not know it
    (a newer node's status): shown, never a failed request."""
    try:
        return kind(value)
    except ValueError:
        return value


def relative(ts_ms: int | None, now_ms: int) -> str:
    """``in 4m05s`` or ``12s ago``; ``-`` for no time."""
    if ts_ms is None:
        return "-"
    d = ts_ms - now_ms
    return f"in {fmt_duration(d)}" if d >= 0 else f"{fmt_duration(-d)} ago"


@dataclass(frozen=True, slots=True)
class JobView:
    """A configured job: its schedule, next tick, latest run and 7-day success."""

    name: str
    type: str
    schedule: str | None
    timezone: str | None
    schedule_words: str
    enabled: bool
    next_run: int | None
    """The next tick (epoch ms); None for manual-only or disabled jobs."""
    next_run_utc: str | None
    next_run_relative: str | None
    last_status: RunStatus | str | None
    """A RunStatus; a status this version does not know (a newer node's) as written."""
    last_scheduled_for: int | None
    last_started_at: int | None
    last_finished_at: int | None
    last_duration_ms: int | None
    success_rate_7d: float | None
    """Ticks that succeeded / ticks that ended in the last 7 days; None before any."""
    runs_7d: int
    description: str
    spec_matches: bool | None
    """False when the cluster runs this job with another node's (different) config."""
    spec_set_by: str | None
    spec_set_at: int | None


def job_overview(specs: Sequence[JobSpec], reader: Reader, now_ms: int) -> list[JobView]:
    """One row per configured job, in config order: one index probe per job for its
    latest run, one bounded range for its week."""
    names = [s.name for s in specs]
    last = reader.last_runs(names)
    rates = reader.success_rates(names, now_ms - 7 * DAY_MS)
    rows = reader.job_rows()
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
        out.append(JobView(
            name=s.name, type=s.type, schedule=trig.expr if trig else None,
            timezone=trig.timezone if trig else None,
            schedule_words=describe(trig.expr, trig.timezone) if trig else "manual only",
            enabled=s.enabled, next_run=nxt, next_run_utc=fmt_ms(nxt) if nxt else None,
            next_run_relative=relative(nxt, now_ms) if nxt else None,
            last_status=as_known(RunStatus, r.status) if r is not None else None,
            last_scheduled_for=r.scheduled_for if r is not None else None,
            last_started_at=r.started_at if r is not None else None,
            last_finished_at=r.finished_at if r is not None else None,
            last_duration_ms=duration,
            success_rate_7d=(ok / done) if done else None, runs_7d=done,
            description=s.description,
            spec_matches=(jr.spec_hash == s.digest) if known and jr else None,
            spec_set_by=jr.spec_by if jr is not None else None,
            spec_set_at=jr.spec_at if jr is not None else None,
        ))
    return out


@dataclass(frozen=True, slots=True)
class NodeView:
    """A daemon that registered in the state DB, and whether its lease is alive."""

    node: str
    host: str
    pid: int
    instance: str | None
    status: str
    """``running``, ``stopped`` or ``dead`` as the node (or whoever found it dead) wrote."""
    alive: bool
    """Running and within its lease: it claims ticks now."""
    started_at: int
    heartbeat_at: int
    heartbeat_age_ms: int
    skew_ms: int | None
    conflicts: list[str]
    """Jobs this node does not claim because its config for them differs."""
    version: str | None


def nodes(reader: Reader, now_ms: int) -> list[NodeView]:
    return [NodeView(n.node, n.host, n.pid, n.instance, n.status, n.alive(now_ms),
                     n.started_at, n.heartbeat_at, max(0, now_ms - n.heartbeat_at),
                     n.skew_ms, list(n.conflicts), n.version)
            for n in reader.nodes()]


@dataclass(frozen=True, slots=True)
class Disagreement:
    node: str
    jobs: list[str]


@dataclass(frozen=True, slots=True)
class UnwellProvider:
    """A source whose latest ``providers_health`` check found it degraded or down."""

    source: str
    status: str
    reasons: list[str]
    checked_at: int
    stale: bool = False
    """The check is old (``queries.providers.STALE_AFTER_MS``): nobody re-checked since."""


@dataclass(frozen=True, slots=True)
class Banner:
    """The line above ``candlekeep list``: is anything running, is anything failing."""

    daemon_up: bool
    """A daemon runs here (PID file) or any node's lease is alive."""
    daemon_local: bool
    live_nodes: list[str]
    state_db_ms: float
    failing_jobs: list[str]
    open_gaps: int | None
    disagreements: list[Disagreement]
    config_differs: list[str]
    """Jobs the local config describes differently from the cluster's."""
    unwell_providers: list[UnwellProvider] | None
    """None when the providers' health could not be read."""


def banner(reader: Reader, jobs: Sequence[JobView], daemon_local: bool,
           now_ms: int) -> Banner:
    found = nodes(reader, now_ms)
    try:
        open_gaps: int | None = reader.open_gaps()
    except Exception:
        open_gaps = None
    return Banner(
        daemon_up=daemon_local or any(n.alive for n in found), daemon_local=daemon_local,
        live_nodes=[n.node for n in found if n.alive],
        state_db_ms=round(reader.ping_ms(), 2),
        failing_jobs=[j.name for j in jobs if j.last_status in FAILING],
        open_gaps=open_gaps,
        disagreements=[Disagreement(n.node, n.conflicts) for n in found
                       if n.alive and n.conflicts],
        config_differs=[j.name for j in jobs if j.spec_matches is False],
        unwell_providers=_unwell_providers(reader))


def _unwell_providers(reader: Reader) -> list[UnwellProvider] | None:
    from candlekeep.queries.providers import unwell

    try:
        found = unwell(reader)
    except Exception:
        return None
    return [UnwellProvider(v.source, v.status.value, v.reasons, v.checked_at, v.stale)
            for v in found]


@dataclass(frozen=True, slots=True)
class JobList:
    """``candlekeep list --json`` and ``/jobs``: the banner and every configured job."""

    health: Banner
    jobs: list[JobView]


def job_list(specs: Sequence[JobSpec], reader: Reader, daemon_local: bool,
             now_ms: int) -> JobList:
    jobs = job_overview(specs, reader, now_ms)
    return JobList(banner(reader, jobs, daemon_local, now_ms), jobs)


@dataclass(frozen=True, slots=True)
class RunView:
    """One attempt of one tick (or manual start) of a job."""

    id: int
    job: str
    scheduled_for: int
    scheduled_utc: str | None
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None
    node: str
    attempt: int
    trigger: Trigger | str
    status: RunStatus | str
    """A RunStatus; one this version does not know (a newer node's) as written."""
    rows_written: int
    requests: int
    error: str | None


def run_view(r: RunRow) -> RunView:
    return RunView(r.id, r.job, r.scheduled_for, iso_ms(r.scheduled_for), r.started_at,
                   r.finished_at, r.duration_ms, r.node, r.attempt, as_known(Trigger, r.trigger),
                   as_known(RunStatus, r.status), r.rows_written, r.requests, r.error)


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of history, newest first; ``next_offset`` is None on the last page."""

    items: list[RunView]
    limit: int
    offset: int
    next_offset: int | None


def runs(reader: Reader, *, job: str | None = None,
         status: RunStatus | Sequence[RunStatus] | None = None,
         since_ms: int | None = None, limit: int = 200, offset: int = 0) -> RunPage:
    """A page of run history, newest first; ``status`` one status or any of several."""
    wanted: str | list[str] | None = (
        None if status is None else status.value if isinstance(status, RunStatus)
        else [s.value for s in status])
    rows = reader.runs(job=job, since_ms=since_ms, status=wanted, limit=limit + 1,
                       offset=offset)
    more = len(rows) > limit
    return RunPage([run_view(r) for r in rows[:limit]], limit, offset,
                   offset + limit if more else None)
