"""What the rules read from the state DB besides ``alert_state``: a job's recent ticks, the
freshness verdicts and the providers' health (through the read model the CLI, the API and
reports share).
Blocking; the engine calls them in a thread."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from candlekeep.queries.providers import ProviderView, providers
from candlekeep.state import tables as t
from candlekeep.state.db import reader_on
from candlekeep.state.rows import FreshnessRow
from candlekeep.state.statuses import RunStatus

FAILING = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED)
"""A tick that ended in one of these, after its retries, failed."""
DECIDED = (RunStatus.SUCCESS, *FAILING)
"""Ticks that count for a streak; skipped, cancelled and still-running ones do not."""

LOOKBACK = 4
"""Ticks read per wanted one: skipped and cancelled ticks in between are passed over."""


def earlier_ticks(engine: Engine, job: str, run_id: int, count: int) -> list[RunStatus]:
    """How the ``count`` latest decided ticks of ``job`` before run ``run_id``'s own tick
    ended (newest first; fewer when the history is shorter), each by its last attempt.

    The run's own tick is left out: a daemon records a finish in a later batch, so the
    caller counts the run it was told about itself."""
    r = t.runs.c
    with engine.connect() as conn:
        tick = conn.execute(sa.select(r.scheduled_for).where(r.id == run_id)).scalar()
        if tick is None:
            return []
        # The newest ticks first, from the (job, scheduled_for, attempt) unique index.
        recent = (sa.select(r.scheduled_for).where(r.job == job, r.scheduled_for != tick)
                  .group_by(r.scheduled_for).order_by(r.scheduled_for.desc())
                  .limit(count * LOOKBACK).subquery())
        rows = conn.execute(
            sa.select(r.scheduled_for, r.attempt, r.status)
            .where(r.job == job, r.scheduled_for.in_(sa.select(recent.c.scheduled_for)))
            .order_by(r.scheduled_for.desc(), r.attempt.desc())).all()
    last: dict[int, str] = {}
    for row in rows:
        last.setdefault(row.scheduled_for, row.status)  # the tick's last attempt
    decided = [RunStatus(s) for s in last.values() if s in DECIDED]
    return decided[:count]


def freshness_rows(engine: Engine) -> list[FreshnessRow]:
    """The last verdict of every subject, as ``Reader.freshness`` reads it, on a
    connection of the engine's own pool."""
    with reader_on(engine) as reader:
        return reader.freshness()


def provider_views(engine: Engine) -> list[ProviderView]:
    """Every source's latest recorded health, through the read model."""
    with reader_on(engine) as reader:
        return providers(reader)
