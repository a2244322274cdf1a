"""Bounded growth: run history, skipped-tick rows, gone nodes and quiet alerts older than
a horizon.

Deleted in small batches (one short transaction each), oldest first, so a daemon pruning a
year of per-second history never holds a lock long enough to delay a claim. Live runs and
the schedule history SLOs need are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from candlekeep.scheduler.store import SchedulerStore
from candlekeep.state import tables as t
from candlekeep.state.ops_tables import alert_state
from candlekeep.state.scheduler_tables import scheduler_nodes
from candlekeep.state.statuses import LIVE_STATUSES, RunStatus

DAY_MS = 86_400_000
BATCH = 5000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long to keep each kind of row (ms); None keeps it forever."""

    runs_ms: int | None = 90 * DAY_MS
    skipped_ms: int | None = 14 * DAY_MS
    nodes_ms: int | None = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class PruneCounts:
    runs: int = 0
    skipped: int = 0
    nodes: int = 0
    alerts: int = 0

    @property
    def total(self) -> int:
        return self.runs + self.skipped + self.nodes + self.alerts

    def __str__(self) -> str:
        return (f"runs={self.runs} skipped={self.skipped} nodes={self.nodes} "
                f"alerts={self.alerts}")


def prune(store: SchedulerStore, retention: Retention, now_ms: int, *,
          dry_run: bool = False) -> PruneCounts:
    rc = t.runs.c
    ended = sa.and_(rc.finished_at.is_not(None),
                    rc.status.not_in([s.value for s in LIVE_STATUSES]))
    runs = skipped = nodes = 0
    if retention.runs_ms is not None:
        runs = _delete_runs(store, sa.and_(ended, rc.status != RunStatus.SKIPPED.value,
                                           rc.finished_at < now_ms - retention.runs_ms),
                            dry_run)
    if retention.skipped_ms is not None:
        skipped = _delete_runs(store, sa.and_(ended, rc.status == RunStatus.SKIPPED.value,
                                              rc.finished_at < now_ms - retention.skipped_ms),
                               dry_run)
    if retention.nodes_ms is not None:
        nc = scheduler_nodes.c
        gone = sa.and_(nc.status.in_(["dead", "stopped"]),
                       nc.heartbeat_at < now_ms - retention.nodes_ms)
        with store.engine.begin() as conn:
            if dry_run:
                nodes = int(conn.execute(sa.select(sa.func.count()).select_from(
                    scheduler_nodes).where(gone)).scalar_one())
            else:
                nodes = int(conn.execute(scheduler_nodes.delete().where(gone)).rowcount)
    alerts = 0
    if retention.runs_ms is not None:
        alerts = _delete_quiet_alerts(store, now_ms - retention.runs_ms, dry_run)
    return PruneCounts(runs, skipped, nodes, alerts)


def _delete_quiet_alerts(store: SchedulerStore, before_ms: int, dry_run: bool) -> int:
    """Alerts nothing has sent or resolved since ``before_ms``: resolved ones, and firing
    ones whose rule no longer looks at them (a removed series, a long-failed gap, which
    then reminds once more if it is still failed)."""
    a = alert_state.c
    quiet = sa.func.coalesce(a.resolved_at, a.last_sent_at, a.first_at) < before_ms
    with store.engine.begin() as conn:
        if dry_run:
            return int(conn.execute(sa.select(sa.func.count()).select_from(alert_state)
                                    .where(quiet)).scalar_one())
        return int(conn.execute(alert_state.delete().where(quiet)).rowcount)


def _delete_runs(store: SchedulerStore, where: sa.ColumnElement[bool], dry_run: bool) -> int:
    rc = t.runs.c
    if dry_run:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.runs)
                                    .where(where)).scalar_one())
    total = 0
    while True:
        with store.engine.begin() as conn:
            ids = sa.select(rc.id).where(where).order_by(rc.finished_at).limit(BATCH)
            n = int(conn.execute(t.runs.delete().where(rc.id.in_(ids.scalar_subquery())))
                    .rowcount)
        total += n
        if n < BATCH:
            return total
