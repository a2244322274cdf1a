"""What a run row says: its status and what started it (no SQLAlchemy here, so the CLI
can name them without loading the database layer)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    """A retry sitting out its backoff (``not_before``); it holds the job's slot, and any
    node may start it once its creator's lease has lapsed."""
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    """Claimed by a daemon for a tick of the job's schedule."""
    TIMER = "timer"
    """Started by a system timer (``candlekeep install``) for a tick of the schedule."""
    MANUAL = "manual"
    """Started by hand (``candlekeep run``, a data command, the API)."""


LIVE_STATUSES = (RunStatus.RUNNING, RunStatus.WAITING)
"""A run holds one of its job's ``max_concurrent`` slots while in these states."""
TICK_TRIGGERS = (Trigger.SCHEDULE, Trigger.TIMER)
"""Runs that stand for a tick of the schedule, as SLOs count them."""


GAP_STATUSES = ("open", "repaired", "confirmed_empty", "failed")


class SubjectKind(StrEnum):
    """What a freshness verdict is about."""

    SERIES = "series"
    """A configured candle series; its subject is ``source:symbol:timeframe``."""
    DATASET = "dataset"
    """A watched table of a store; its subject is the table's name."""


class FreshnessStatus(StrEnum):
    """How current a series or dataset is, as the freshness check judged it."""

    OK = "ok"
    STALE = "stale"
    """The newest row is older than its threshold allows."""
    MISSING = "missing"
    """Nothing stored at all (a configured series never written, a dataset's table absent)."""
    ERROR = "error"
    """The store could not be read."""


FRESHNESS_ALERTING = (FreshnessStatus.STALE, FreshnessStatus.MISSING, FreshnessStatus.ERROR)
"""Statuses that raise a freshness alert (a store unreadable for a day is news too); back
to OK is its recovery."""


HORIZON_CHECKPOINT = "horizon"
"""Checkpoint rows under this job name record where a series' history was cut by the
exchange's history horizon (backfill writes them; coverage reads them)."""
