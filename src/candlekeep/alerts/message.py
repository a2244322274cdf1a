"""What one notification says, before any channel shapes it: a title, a short summary,
the subjects it is about, the error, the facts a person needs to act (run, node, time)
and where to look next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from candlekeep.core.timeutil import fmt_ms

MAX_LINES = 50
"""Subjects listed in one message; the rest are counted (an outage can stale hundreds)."""


class RuleKind(StrEnum):
    """What an alert rule watches (``alerts.rules[].on``)."""

    JOB_FAILED = "job_failed"
    CONSECUTIVE_FAILURES = "consecutive_failures"
    FRESHNESS = "freshness"
    GAP_FAILED = "gap_failed"
    PROVIDER_DEGRADED = "provider_degraded"
    PREMOVE = "premove"


class AlertState(StrEnum):
    """An alert's state in ``alert_state``, and what a message announces."""

    FIRING = "firing"
    RESOLVED = "resolved"


SubjectValue = str | int | None


@dataclass(frozen=True, slots=True)
class Subject:
    """One alert (one ``alert_state`` key) a message is about."""

    key: str
    fields: Mapping[str, SubjectValue]
    """What it is about, for machines (the JSON webhook): job and run, or series, or gap."""
    line: str = ""
    """One line for people when a message lists several subjects."""


@dataclass(frozen=True, slots=True)
class Message:
    rule: RuleKind
    state: AlertState
    title: str
    summary: str
    subjects: tuple[Subject, ...]
    time_ms: int
    node: str
    error: str | None = None
    facts: tuple[tuple[str, str], ...] = ()
    hint: str = ""
    listed: tuple[str, ...] = field(init=False)
    """The subjects' lines, capped at ``MAX_LINES``."""

    def __post_init__(self) -> None:
        lines = [s.line for s in self.subjects if s.line]
        if len(lines) > MAX_LINES:
            lines = [*lines[:MAX_LINES], f"… and {len(lines) - MAX_LINES} more"]
        object.__setattr__(self, "listed", tuple(lines))

    @property
    def firing(self) -> bool:
        return self.state is AlertState.FIRING

    @property
    def time_utc(self) -> str:
        return f"{fmt_ms(self.time_ms)} UTC"

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.subjects]

    def text(self) -> str:
        """The plain-text body every channel but the JSON webhook shows."""
        parts = [self.summary]
        if self.listed:
            parts.append("\n".join(f"- {line}" for line in self.listed))
        if self.error:
            parts.append(f"Error:\n{self.error}")
        if self.facts:
            parts.append("\n".join(f"{label}: {value}" for label, value in self.facts))
        if self.hint:
            parts.append(self.hint)
        return "\n\n".join(parts)
