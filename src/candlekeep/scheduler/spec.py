"""A configured job made ready to schedule: its trigger, its job type and validated params.

A spec also has a digest: what the cluster compares to know that two nodes mean the same
job by the same name (see ``document``). Nodes whose digest differs from the one stored
with the job do not claim it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

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
    digest: str = ""
    """Filled in from ``document`` and the params; see the module docstring."""

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", spec_digest(self))

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


def document(spec: JobSpec) -> dict[str, Any]:
    """What the state DB keeps of a spec: everything that decides when and how often the job
    runs. Params are left out (they may carry secrets); only their digest is compared."""
    trig = spec.trigger
    return {"type": spec.type, "schedule": trig.expr if trig else None,
            "timezone": trig.timezone if trig else None, "enabled": spec.enabled,
            "misfire": spec.misfire, "misfire_grace_ms": spec.grace_ms,
            "max_concurrent": spec.max_concurrent, "timeout_s": spec.timeout_s,
            "retries": {"attempts": spec.retries.attempts, "backoff": spec.retries.backoff,
                        "max_backoff": spec.retries.max_backoff}}


def spec_digest(spec: JobSpec) -> str:
    body = {**document(spec), "params": spec.params.model_dump(mode="json")}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def retries_of(doc: dict[str, Any] | None) -> RetriesConfig:
    """The retry policy stored with a job (the cluster's, whatever this node's config says)."""
    raw = (doc or {}).get("retries")
    return RetriesConfig.model_validate(raw) if isinstance(raw, dict) else RetriesConfig()


def backoff_delay(retries: RetriesConfig, attempt: int, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, jittered upwards by up to 25%,
    never below the configured backoff step and never above ``max_backoff``."""
    base = min(retries.max_backoff, retries.backoff * float(2 ** max(0, attempt - 1)))
    return float(min(retries.max_backoff, base * rng.uniform(1.0, 1.25)))
