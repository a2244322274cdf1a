"""A configured job made ready to schedule: its trigger, its job type and validated params."""

from __future__ import annotations

from dataclasses import dataclass, field

from candlekeep.config.models import RetriesConfig
from candlekeep.jobs.base import JobType, Params
from candlekeep.scheduler.triggers import CronTrigger

MISFIRE_POLICIES = ("catch_up", "coalesce", "skip")

SKIP_ON_TIME_MS = 5_000
"""How late a tick may start under ``misfire: skip`` without a ``misfire_grace``."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    type: str
    job_type: JobType
    params: Params
    trigger: CronTrigger | None
    enabled: bool = True
    misfire: str = "coalesce"
    grace_ms: int | None = None
    max_concurrent: int = 1
    timeout_s: float | None = None
    retries: RetriesConfig = field(default_factory=RetriesConfig)
    description: str = ""

    @property
    def scheduled(self) -> bool:
        """Whether the daemon fires it (jobs without a schedule run only by hand)."""
        return self.enabled and self.trigger is not None

    @property
    def effective_grace_ms(self) -> int | None:
        """Ticks older than this at accounting time are skipped; None: never."""
        if self.grace_ms is not None:
            return self.grace_ms
        return SKIP_ON_TIME_MS if self.misfire == "skip" else None
