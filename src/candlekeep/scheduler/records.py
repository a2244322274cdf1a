"""What the scheduler store reads and returns: typed rows and outcomes, no SQL here."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import StrEnum

from candlekeep.state.rows import JobRow
from candlekeep.state.statuses import RunStatus, Trigger


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns the runs a store starts: a node name, this process's instance id, and the
    lease its heartbeats keep (three heartbeats)."""

    node: str
    instance: str
    lease_ms: int
    host: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    run_id: int
    job: str
    scheduled_for: int
    attempt: int = 1
    trigger: Trigger = Trigger.SCHEDULE


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    """Ticks accounted for (``runs`` may be empty: nothing due, or all skipped)."""
    PENDING = "pending"
    """Due ticks wait for a free slot (``max_concurrent`` reached)."""
    LOCKED = "locked"
    """Another process holds the job's row right now; look again in a moment."""
    CONFLICT = "conflict"
    """The cluster's spec of the job differs from ours: we do not claim it."""


@dataclass(slots=True)
class ClaimOutcome:
    job: str
    state: ClaimState
    runs: list[ClaimedRun] = field(default_factory=list)
    skipped: int = 0
    last_tick: int | None = None
    conflict: JobRow | None = None

    @property
    def pending(self) -> bool:
        return self.state is ClaimState.PENDING


@dataclass(frozen=True, slots=True)
class Finish:
    run_id: int
    status: RunStatus
    finished_at: int
    rows_written: int = 0
    requests: int = 0
    error: str | None = None
    started_at: int | None = None
    """When the attempt really began (its local slot was held); None keeps the claim time."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A write the state DB refused because the run is no longer ours to write."""

    run_id: int
    wanted: RunStatus
    found: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class Busy:
    """The live run that keeps a job from starting now."""

    node: str
    run_id: int
    status: str


@dataclass(frozen=True, slots=True)
class TickTaken:
    """The tick a timer run stands for was already run (by a daemon, or an earlier timer)."""

    run_id: int
    node: str
    status: str


@dataclass(frozen=True, slots=True)
class Abandoned:
    run_id: int
    job: str
    node: str
    instance: str | None
    process: str | None
    retry_id: int | None
    """The waiting attempt created in its place, when the job has attempts left."""
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Beat:
    held: frozenset[int]
    """Ids of the live rows (running or waiting) this instance still owns."""
    db_now_ms: int | None
    """The state DB's clock at the heartbeat (PostgreSQL), for measuring skew."""
    node_row_ours: bool = True
    """False when our node row now names another instance (someone took the name over)."""
