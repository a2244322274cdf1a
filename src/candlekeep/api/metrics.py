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
scrape.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from candlekeep.api.db import ReaderPool
from candlekeep.config.models import Config
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.jobs.runtime import series_plans
from candlekeep.queries.jobs import DAY_MS
from candlekeep.sources.base import open_sources
from candlekeep.state.reader import Reader

log = logging.getLogger("candlekeep.api")

SERIES_LABELS = ["store", "source", "symbol", "timeframe"]


class ClusterCollector(Collector):
    def __init__(self, config: Config, jobs: Sequence[str], pool: ReaderPool,
                 now_ms: Callable[[], int]) -> None:
        self.config = config
        self.jobs = list(jobs)
        self.pool = pool
        self.now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("candlekeep_state_db_up",
                               "Cluster: 1 when the state DB answered this scrape.")
        try:
            with self.pool.reader() as reader:
                found = list(self._read(reader, self.now_ms()))
        except Exception as exc:
            log.warning("metrics: state DB unreadable error=%s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from found

    def _read(self, reader: Reader, now: int) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "candlekeep_runs_last_24h",
            "Cluster: runs scheduled in the last 24 h, by job and status.",
            labels=["job", "status"])
        window = reader.run_counts(now - DAY_MS, now + DAY_MS)  # retries wait ahead
        for (job, status), count in sorted(window.items()):
            runs.add_metric([job, status], count)
        yield runs
        last = GaugeMetricFamily(
            "candlekeep_job_last_success_timestamp_seconds",
            "Cluster: when each configured job's latest successful run ended.",
            labels=["job"])
        for job, at in sorted(reader.last_successes(self.jobs).items()):
            last.add_metric([job], at / 1000)
        yield last
        yield from self._series(reader, now)
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

    def _series(self, reader: Reader, now: int) -> Iterator[Metric]:
        newest = GaugeMetricFamily(
            "candlekeep_series_last_candle_timestamp_seconds",
            "Cluster: open time of each configured series' newest stored candle.",
            labels=SERIES_LABELS)
        lag = GaugeMetricFamily(
            "candlekeep_series_lag_seconds",
            "Cluster: seconds since each configured series' newest stored candle closed.",
            labels=SERIES_LABELS)
        state = {(r.store, r.series): r.last_ms for r in reader.series_state()}
        for p in series_plans(self.config):
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
    """Per-process: what this process's sources asked of their exchanges since start."""

    FIELDS = (("requests", "candlekeep_source_requests", "requests sent"),
              ("rate_limited", "candlekeep_source_rate_limited",
               "replies refused for rate (HTTP 429/418)"),
              ("retries", "candlekeep_source_retries", "requests retried"),
              ("rejected_replies", "candlekeep_source_rejected_replies",
               "replies rejected by validation"))

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for src in open_sources():
            for field, _, _ in self.FIELDS:
                totals[src.name][field] += getattr(src.stats, field)
        for field, name, what in self.FIELDS:
            fam = CounterMetricFamily(name, f"Per process: {what}, by source.",
                                      labels=["source"])
            for source, counts in sorted(totals.items()):
                fam.add_metric([source], counts[field])
            yield fam


class _Registry(Collector):
    """Another registry's metrics (the run path's histogram) inside ours."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        yield from self.inner.collect()


def registry(cluster: ClusterCollector, runs: CollectorRegistry) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(cluster)
    reg.register(SourceCollector())
    reg.register(_Registry(runs))
    return reg
