"""Whether candlekeep works: each component's status and the worst of them.

The probes themselves (a state DB round trip, a store's ``check``) are timed by the caller,
which may run them in threads with timeouts; this module only judges what they found, so
the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from candlekeep.config.models import Config
from candlekeep.core.timeutil import fmt_duration
from candlekeep.queries.freshness import FreshnessView
from candlekeep.queries.jobs import NodeView
from candlekeep.queries.providers import ProviderView
from candlekeep.state.statuses import FreshnessStatus


class HealthStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    """Working, but something needs a look (stale data, a node gone, no daemon)."""
    DOWN = "down"
    """A component candlekeep cannot work without is unreachable: HTTP 503."""


_RANK = {HealthStatus.OK: 0, HealthStatus.DEGRADED: 1, HealthStatus.DOWN: 2}


def worst(statuses: Sequence[HealthStatus]) -> HealthStatus:
    return max(statuses, key=_RANK.__getitem__, default=HealthStatus.OK)


class Component(StrEnum):
    STATE_DB = "state_db"
    STORE = "store"
    SCHEDULER = "scheduler"
    NODE = "node"
    SOURCE = "source"
    FRESHNESS = "freshness"


@dataclass(frozen=True, slots=True)
class ProbeView:
    """One reachability probe: did it answer, how fast, and if not, why."""

    name: str
    kind: Component
    type: str
    """The backend (``sqlite``, ``postgresql``, ``duckdb``, ``buffer``, …)."""
    reachable: bool
    latency_ms: float | None
    error: str | None
    busy: bool = False
    """Another process holds it for writing (a DuckDB file): degraded, not down."""


@dataclass(frozen=True, slots=True)
class SystemStatus:
    """``/system/status``: the state DB and each configured store, reachable or not."""

    state_db: ProbeView
    stores: list[ProbeView]


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    """``state_db``, the store's or source's name, the node's name, ``scheduler``,
    ``freshness``."""
    kind: Component
    status: HealthStatus
    detail: str
    latency_ms: float | None = None
    age_ms: int | None = None
    """Nodes: since the last heartbeat. Freshness: of the stalest subject."""


@dataclass(frozen=True, slots=True)
class HealthView:
    """``/system/health``: ``status`` is the worst component's (503 when ``down``)."""

    status: HealthStatus
    checked_at: int
    components: list[ComponentHealth]


SLOW_MS = 1000.0
"""A probe answering slower than this makes its component degraded."""


def _probe(p: ProbeView) -> ComponentHealth:
    if p.busy:
        return ComponentHealth(p.name, p.kind, HealthStatus.DEGRADED, p.error or "busy",
                               p.latency_ms)
    if not p.reachable:
        return ComponentHealth(p.name, p.kind, HealthStatus.DOWN,
                               f"unreachable: {p.error}", p.latency_ms)
    slow = p.latency_ms is not None and p.latency_ms > SLOW_MS
    return ComponentHealth(p.name, p.kind, HealthStatus.DEGRADED if slow else HealthStatus.OK,
                           f"{p.type}, slow ({p.latency_ms:.0f} ms)" if slow else p.type,
                           p.latency_ms)


def _nodes(found: Sequence[NodeView], scheduled: bool, now_ms: int) -> list[ComponentHealth]:
    out = []
    for n in found:
        age = max(0, now_ms - n.heartbeat_at)
        if n.alive:
            status, detail = HealthStatus.OK, f"alive on {n.host}, pid {n.pid}"
        elif n.status == "running":  # never said goodbye: crashed or cut off
            status, detail = HealthStatus.DEGRADED, (
                f"no heartbeat for {fmt_duration(age)}: its lease has lapsed")
        else:
            continue  # stopped or found dead earlier: history, not health
        out.append(ComponentHealth(n.node, Component.NODE, status, detail, age_ms=age))
    live = [n.node for n in found if n.alive]
    if live:
        sched = ComponentHealth("scheduler", Component.SCHEDULER, HealthStatus.OK,
                                f"{len(live)} live node(s): {', '.join(live)}")
    elif scheduled:
        sched = ComponentHealth("scheduler", Component.SCHEDULER, HealthStatus.DEGRADED,
                                "no daemon is running: scheduled jobs only run from "
                                "timers or by hand")
    else:
        sched = ComponentHealth("scheduler", Component.SCHEDULER, HealthStatus.OK,
                                "no scheduled jobs")
    return [sched, *out]


def _freshness(verdicts: Sequence[FreshnessView]) -> ComponentHealth:
    if not verdicts:
        return ComponentHealth("freshness", Component.FRESHNESS, HealthStatus.OK,
                               "not checked yet (no freshness job has run)")
    bad = [v for v in verdicts if v.status != FreshnessStatus.OK]
    oldest = max((v.age_ms for v in verdicts if v.age_ms is not None), default=None)
    if not bad:
        return ComponentHealth("freshness", Component.FRESHNESS, HealthStatus.OK,
                               f"{len(verdicts)} subject(s) fresh", age_ms=oldest)
    counts: dict[str, int] = {}
    for v in bad:
        counts[v.status.value] = counts.get(v.status.value, 0) + 1
    listed = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return ComponentHealth("freshness", Component.FRESHNESS, HealthStatus.DEGRADED,
                           f"{listed} of {len(verdicts)}: {bad[0].subject} is "
                           f"{bad[0].status.value}", age_ms=oldest)


def _source(name: str, kind: str, found: ProviderView | None,
            now_ms: int) -> ComponentHealth:
    """A source as its latest providers_health check found it. A provider that is down
    makes the component degraded, not down: the exchange's outage is not candlekeep's, and
    503 stays for what candlekeep cannot work without."""
    if found is None:
        return ComponentHealth(name, Component.SOURCE, HealthStatus.OK,
                               f"configured ({kind}), health not checked yet")
    age = max(0, now_ms - found.checked_at)
    stale = f"stale, checked {fmt_duration(age)} ago: " if found.stale else ""
    if not found.unwell:
        return ComponentHealth(name, Component.SOURCE, HealthStatus.OK,
                               f"{kind}, {stale}up (score {found.score:.2f})",
                               found.latency_p50_s and found.latency_p50_s * 1000, age)
    return ComponentHealth(name, Component.SOURCE, HealthStatus.DEGRADED,
                           f"{kind}, {stale}{found.status}: {'; '.join(found.reasons)}",
                           found.latency_p50_s and found.latency_p50_s * 1000, age)


def health(config: Config, state_db: ProbeView, stores: Sequence[ProbeView],
           found_nodes: Sequence[NodeView] | None, verdicts: Sequence[FreshnessView] | None,
           scheduled: bool, now_ms: int, read_error: str | None = None,
           providers: Sequence[ProviderView] | None = None) -> HealthView:
    """Judge the probes and what the state DB says; ``found_nodes`` and ``verdicts`` are
    None when the state DB could not be read: unreachable (its probe says why) or,
    ``read_error``, answering but unreadable (a table missing): down either way, as the
    routes that read it are. ``providers``: the sources' latest recorded health."""
    db = _probe(state_db)
    if read_error is not None and db.status != HealthStatus.DOWN:
        db = ComponentHealth(state_db.name, state_db.kind, HealthStatus.DOWN,
                             f"answers, but cannot be read: {read_error}", state_db.latency_ms)
    parts = [db, *(_probe(s) for s in stores)]
    if found_nodes is not None:
        parts += _nodes(found_nodes, scheduled, now_ms)
    checked = {v.source: v for v in providers or ()}
    for name, src in config.sources.items():
        parts.append(_source(name, src.type, checked.get(name), now_ms))
    if verdicts is not None:
        parts.append(_freshness(verdicts))
    return HealthView(worst([p.status for p in parts]), now_ms, parts)
