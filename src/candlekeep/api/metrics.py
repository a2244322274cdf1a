"""``/metrics`` in Prometheus' text format, from a registry of the API's own.

Two kinds of metric, told apart in their help text:

- **cluster** facts, read from the state DB at scrape time, the same in every process that
  serves the API: runs by job and status over the last 24 h, each job's last success,
  each series' newest candle and lag, gaps by status, freshness verdicts, each daemon
  node's heartbeat age;
- **per-process** counters of the process serving the API (meaningful in the daemon, which
  runs the jobs): run durations (``api.runmetrics``) and each source's requests, 429s,
  retries and rejected replies (``Source.stats``).

A state DB that cannot be read makes ``candlekeep_state_db_up`` 0 instead of failing the
scrape (warned of once a minute, not once a scrape). ``/metrics`` needs no token, so a
scrape's bytes are kept for a second and shared: scrapers cannot multiply the state DB's
load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from candlekeep.api.context import ApiContext
from candlekeep.api.errors import StateDBUnavailable
from candlekeep.api.recent import Recent
from candlekeep.api.runmetrics import run_metrics
from candlekeep.config.models import Config
from candlekeep.core.timeframes import DAY_MS, parse_timeframe
from candlekeep.jobs.runtime import Runtime, series_plans
from candlekeep.sources.circuit import CircuitState
from candlekeep.state.reader import Reader

SERIES_LABELS = ["store", "source", "symbol", "timeframe"]


class Metrics:
    """What ``/metrics`` sends: the cluster's facts, read on the API's reader pool (one
    bounded set of threads and connections, shared with the routes: a crowd of scrapers
    cannot take more), then this process's counters. The text is kept ``ctx.keep_s`` and
    shared by concurrent scrapers: a scrape costs the state DB one read a second at most."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.jobs = [s.name for s in ctx.specs]
        self._answers = Recent(ctx.keep_s)
        self._process: list[Collector] = [SourceCollector(ctx.runtime),
                                          _Registry(run_metrics(ctx.runtime).registry)]

    async def scrape(self) -> bytes:
        return await self._answers.get("scrape", self._render)

    async def _render(self) -> bytes:
        now = self.ctx.now_ms()
        up = GaugeMetricFamily("candlekeep_state_db_up",
                               "Cluster: 1 when the state DB answered this scrape.")
        try:
            cluster = await self.ctx.pool.run(
                lambda reader: list(cluster_metrics(reader, self.ctx.config, self.jobs, now)))
            up.add_metric([], 1)
        except StateDBUnavailable as exc:
            self.ctx.pool.outage.warning("metrics", "metrics: state DB unreadable error=%s",
                                         exc)
            cluster = []
            up.add_metric([], 0)
        process = [m for c in self._process for m in c.collect()]
        return generate_latest(_Families([up, *cluster, *process]))


def cluster_metrics(reader: Reader, config: Config, jobs: Sequence[str],
                    now: int) -> Iterator[Metric]:
    runs = GaugeMetricFamily(
        "candlekeep_runs_last_24h",
        "Cluster: runs scheduled in the 24 h up to the scrape, by job and status.",
        labels=["job", "status"])
    for (job, status), count in sorted(reader.run_counts(now - DAY_MS, now).items()):
        runs.add_metric([job, status], count)
    yield runs
    last = GaugeMetricFamily(
        "candlekeep_job_last_success_timestamp_seconds",
        "Cluster: when each configured job's latest successful run ended.",
        labels=["job"])
    for job, at in sorted(reader.last_successes(jobs).items()):
        last.add_metric([job], at / 1000)
    yield last
    yield from _series(reader, config, now)
    gaps = GaugeMetricFamily("candlekeep_gaps", "Cluster: recorded gaps by status.",
                             labels=["status"])
    counts = reader.gap_status_counts()
    for status in ("open", "failed", "confirmed_empty", "repaired"):
        gaps.add_metric([status], counts.get(status, 0))
    yield gaps
    fresh = GaugeMetricFamily(
        "candlekeep_freshness_subjects",
        "Cluster: series and datasets per freshness verdict at the last check.",
        labels=["status"])
    verdicts: dict[str, int] = defaultdict(int)
    for v in reader.freshness():
        verdicts[v.status] += 1
    for status, count in sorted(verdicts.items()):
        fresh.add_metric([status], count)
    yield fresh
    age = GaugeMetricFamily(
        "candlekeep_node_heartbeat_age_seconds",
        "Cluster: seconds since each running daemon node's last heartbeat.",
        labels=["node"])
    alive = GaugeMetricFamily("candlekeep_node_up",
                              "Cluster: 1 while a running node's lease is alive.",
                              labels=["node"])
    for n in reader.nodes():
        if n.status != "running":
            continue
        age.add_metric([n.node], max(0, now - n.heartbeat_at) / 1000)
        alive.add_metric([n.node], 1 if n.alive(now) else 0)
    yield age
    yield alive


def _series(reader: Reader, config: Config, now: int) -> Iterator[Metric]:
    newest = GaugeMetricFamily(
        "candlekeep_series_last_candle_timestamp_seconds",
        "Cluster: open time of each configured series' newest stored candle.",
        labels=SERIES_LABELS)
    lag = GaugeMetricFamily(
        "candlekeep_series_lag_seconds",
        "Cluster: seconds since each configured series' newest stored candle closed.",
        labels=SERIES_LABELS)
    state = {(r.store, r.series): r.last_ms for r in reader.series_state()}
    for p in series_plans(config):
        last = state.get((p.store, p.key))
        if last is None:
            continue
        labels = [p.store, *p.key]
        newest.add_metric(labels, last / 1000)
        closed = last + parse_timeframe(p.key.timeframe).ms
        lag.add_metric(labels, max(0, now - closed) / 1000)
    yield newest
    yield lag


class SourceCollector(Collector):
    """Per-process: what the sources of the runtime serving the API (the daemon's, when it
    serves it) asked of their exchanges since they were made."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    FIELDS = (("requests", "candlekeep_source_requests", "requests sent"),
              ("rate_limited", "candlekeep_source_rate_limited",
               "replies refused for rate (HTTP 429/418)"),
              ("retries", "candlekeep_source_retries", "requests retried"),
              ("rejected_replies", "candlekeep_source_rejected_replies",
               "replies rejected by validation"))

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for src in self.runtime.open_sources():
            for field, _, _ in self.FIELDS:
                totals[src.name][field] += getattr(src.stats, field)
        for field, name, what in self.FIELDS:
            fam = CounterMetricFamily(name, f"Per process: {what}, by source.",
                                      labels=["source"])
            for source, counts in sorted(totals.items()):
                fam.add_metric([source], counts[field])
            yield fam
        yield from self._circuits_and_budgets()

    CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

    def _circuits_and_budgets(self) -> Iterator[Metric]:
        circuit = GaugeMetricFamily(
            "candlekeep_source_circuit_state",
            "Per process: each source's circuit breaker, 0 closed, 1 half-open, 2 open.",
            labels=["source"])
        budget = GaugeMetricFamily(
            "candlekeep_source_budget",
            "Per process: rate budget per window now (effective: an adaptive limiter's "
            "current level) and as published (advertised).", labels=["source", "kind"])
        for src in self.runtime.open_sources():
            circuit.add_metric([src.name], self.CIRCUIT_VALUE[src.circuit.state])
            snapshot = getattr(getattr(src, "limiter", None), "snapshot", None)
            if snapshot is not None:
                snap = snapshot()
                budget.add_metric([src.name, "effective"], snap.effective_budget)
                budget.add_metric([src.name, "advertised"], snap.advertised_budget)
        yield circuit
        yield budget


class _Registry(Collector):
    """Another registry's metrics (the run path's histogram) inside ours."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        yield from self.inner.collect()


class _Families(Collector):
    """Metric families already collected, for ``generate_latest``."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
