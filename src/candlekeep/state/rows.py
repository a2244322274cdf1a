"""Rows of the state DB as typed values (no SQLAlchemy here: job code and listings use them
without loading the database layer)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from candlekeep.core.series import SeriesKey


@dataclass(frozen=True, slots=True)
class GapRow:
    id: int
    series: SeriesKey
    gap_start: int
    gap_end: int
    detected_at: int
    repaired_at: int | None
    status: str
    attempts: int
    empty_attempts: int
    last_error: str | None

    def candles(self, tf_ms: int) -> int:
        return (self.gap_end - self.gap_start) // tf_ms + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "source": self.series.source, "symbol": self.series.symbol,
            "timeframe": self.series.timeframe, "gap_start": self.gap_start,
            "gap_end": self.gap_end, "detected_at": self.detected_at,
            "repaired_at": self.repaired_at, "status": self.status, "attempts": self.attempts,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    job: str
    scheduled_for: int
    attempt: int
    node: str
    trigger: str
    started_at: int | None
    finished_at: int | None
    status: str
    rows_written: int
    requests: int
    error: str | None

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    host: str
    pid: int
    started_at: int
    heartbeat_at: int
    stopped_at: int | None
    status: str
    lease_ms: int
    instance: str | None = None
    lease_until: int | None = None
    skew_ms: int | None = None
    conflicts: tuple[str, ...] = ()
    version: str | None = None

    def alive(self, now_ms: int) -> bool:
        until = self.lease_until if self.lease_until is not None else (
            self.heartbeat_at + self.lease_ms)
        return self.status == "running" and now_ms <= until


@dataclass(frozen=True, slots=True)
class JobRow:
    job: str
    schedule: str | None
    timezone: str | None
    last_tick: int
    created_at: int
    spec_hash: str | None = None
    spec_by: str | None = None
    spec_at: int | None = None
    spec: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One period of a job's schedule history, from ``since`` (exclusive) on."""

    job: str
    since: int
    schedule: str | None
    timezone: str | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class SeriesStateRow:
    """``series_state``: a series' stored range in one store (``rows`` an upper bound
    between reconciliations)."""

    store: str
    source: str
    symbol: str
    timeframe: str
    first_ms: int | None
    last_ms: int | None
    rows: int
    updated_at: int
    scanned_at: int | None

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.source, self.symbol, self.timeframe)


@dataclass(frozen=True, slots=True)
class FreshnessRow:
    """``freshness``: the last verdict on a series or dataset."""

    kind: str
    store: str
    subject: str
    newest_ms: int | None
    age_ms: int | None
    threshold_ms: int
    rows: int | None
    status: str
    detail: str | None
    checked_at: int
    status_since: int


JOB_COLUMNS = ("job", "schedule", "timezone", "last_tick", "created_at", "spec_hash", "spec_by",
               "spec_at", "spec")
"""``scheduler_jobs`` columns in ``JobRow`` order: every reader selects these."""

NODE_COLUMNS = ("node", "host", "pid", "started_at", "heartbeat_at", "stopped_at", "status",
                "lease_ms", "instance", "lease_until", "skew_ms", "conflicts", "version")
"""``scheduler_nodes`` columns in ``NodeRow`` order (``conflicts`` is stored as JSON)."""


def node_row(values: Sequence[Any]) -> NodeRow:
    """A NodeRow from ``NODE_COLUMNS`` values; unreadable conflicts read as none."""
    raw = values[11]
    try:
        conflicts = tuple(json.loads(raw)) if raw else ()
    except (ValueError, TypeError):
        conflicts = ()
    v = values
    return NodeRow(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
                   conflicts, v[12])
