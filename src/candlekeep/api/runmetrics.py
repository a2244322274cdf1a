"""How long this process's runs took: a histogram fed by the run path's observer.

In-process, like every metric read from memory: a daemon's ``/metrics`` shows the runs that
daemon ran since it started (a ``candlekeep serve`` that runs no jobs shows none). Kept apart
from ``api.metrics`` so the run path loads only prometheus-client, not the web stack.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram

if TYPE_CHECKING:
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.runpath import RunOutcome
    from candlekeep.scheduler.spec import JobSpec

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class RunMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "candlekeep_run_duration_seconds",
            "Duration of job runs ended in this process, by job and final status.",
            ["job", "status"], buckets=BUCKETS, registry=self.registry)

    async def observe(self, outcome: RunOutcome, spec: JobSpec) -> None:
        """A ``RunObserver``: the run's whole time, attempts and backoffs included."""
        if not outcome.ran_here:
            return
        seconds = max(0, outcome.finished_at - outcome.started_at) / 1000
        self.duration.labels(spec.name, outcome.status.value).observe(seconds)


_BY_RUNTIME: weakref.WeakKeyDictionary[Runtime, RunMetrics] = weakref.WeakKeyDictionary()


def run_metrics(runtime: Runtime) -> RunMetrics:
    """The one RunMetrics of ``runtime``: the run path observes into it, the API reads it."""
    found = _BY_RUNTIME.get(runtime)
    if found is None:
        found = _BY_RUNTIME[runtime] = RunMetrics()
    return found
