"""What every route of one API app shares: the config, the jobs, the state DB pool, the
probes, the auth check, the clock and how long answers are reused."""

from __future__ import annotations

from dataclasses import dataclass

from candlekeep.api.auth import Auth
from candlekeep.api.db import ReaderPool
from candlekeep.api.probes import Prober
from candlekeep.config.models import Config
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.spec import JobSpec


@dataclass(slots=True)
class ApiContext:
    config: Config
    specs: list[JobSpec]
    runtime: Runtime
    """Stores for the probes; in the daemon, the daemon's own (its sources' counters are
    what ``/metrics`` reports)."""
    pool: ReaderPool
    prober: Prober
    auth: Auth
    keep_s: float
    """How long ``/ingestion/status`` and ``/metrics`` answers are reused (0: never)."""

    def now_ms(self) -> int:
        return self.runtime.clock.now_ms()
