"""A provider's health, judged from what one process has seen of it: the source's circuit
breaker (state, error rate and latency over its window), its request counters and its rate
budget.

``ProviderHealth`` is what the ``providers_health`` job records, ``candlekeep providers``
shows and fallback chains will be ordered by (``health_score``). The rules live here once:

* **down**: the circuit is open (requests fail fast until its cool-down ends);
* **degraded**: the circuit is half-open, or over the counters since the last check the
  error rate or the 429 rate is at or above its threshold (judged from ``min_requests``
  requests on), or the limiter's effective budget was cut below the advertised one, or the
  probe failed;
* **up** otherwise, including a provider nobody has asked anything yet.

Rates come from the *difference* of a source's lifetime counters between two checks of one
process (``Counters``), not from the lifetime totals: a daemon's week of clean requests must
not hide an hour of 429s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from candlekeep.sources.circuit import CircuitSnapshot, CircuitState

if TYPE_CHECKING:
    from candlekeep.core.series import SeriesKey
    from candlekeep.sources.base import Source


class ProviderStatus(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    """Answering, but badly: errors, 429s, a cut budget, a circuit probing its way back."""
    DOWN = "down"
    """Its circuit is open: every request fails fast."""


UNKNOWN_SCORE = 0.9
"""The score of a provider with a closed circuit and no call in its window: presumed
healthy (it is tried), yet ranked below one measured healthy, so a fallback chain prefers
what it knows works."""

SLOW_S = 2.0
"""A p95 latency above this lowers the score in proportion (4 s halves it)."""

_AVAILABILITY = {CircuitState.CLOSED: 1.0, CircuitState.HALF_OPEN: 0.5, CircuitState.OPEN: 0.0}


def health_score(state: CircuitState, calls: int, failures: int,
                 latency_p95_s: float | None, *, slow_s: float = SLOW_S) -> float:
    """How healthy a provider looks, in [0, 1], higher is healthier.

    The product of availability (closed 1, half-open 0.5, open 0), the success rate of the
    calls in the circuit's window and a latency factor (1 up to ``slow_s`` at p95, then
    ``slow_s / p95``). With no call in the window the success rate and latency are unknown:
    the score is availability times ``UNKNOWN_SCORE``."""
    availability = _AVAILABILITY[state]
    if availability == 0.0:
        return 0.0
    if calls <= 0:
        return availability * UNKNOWN_SCORE
    success = max(0, calls - failures) / calls
    slow = latency_p95_s is not None and latency_p95_s > slow_s
    latency = slow_s / latency_p95_s if slow and latency_p95_s else 1.0
    return round(availability * success * latency, 4)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a provider counts as degraded (``providers_health`` params)."""

    error_rate: float = 0.2
    """Share of the circuit window's calls that failed."""
    rate_limited_rate: float = 0.1
    """Share of requests since the last check answered 429/418."""
    min_requests: int = 5
    """Calls (or requests) below which a rate is not judged: two calls, one failed, is
    noise."""


@dataclass(frozen=True, slots=True)
class Counters:
    """A source's lifetime counters at one moment (``SourceStats``)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0

    @classmethod
    def of(cls, source: Source) -> Counters:
        s = source.stats
        return cls(s.requests, s.retries, s.rate_limited)

    def __sub__(self, other: Counters) -> Counters:
        if self.requests < other.requests:  # a new source object: its counters restarted
            return self
        return Counters(self.requests - other.requests, self.retries - other.retries,
                        self.rate_limited - other.rate_limited)


@dataclass(frozen=True, slots=True)
class Budget:
    """A rate limiter's use: weight on the books of its window against the budget it paces
    to now, and the budget the exchange advertises (an adaptive budget is cut below it by
    429s; a fixed one equals it)."""

    used: int
    budget: int
    advertised: int
    window_s: float

    @property
    def cut(self) -> bool:
        return self.budget < self.advertised


def budget_of(source: Source) -> tuple[Budget | None, dict[str, Any] | None]:
    """The source's rate budget when it has a limiter (CCXT, Hyperliquid), and the
    limiter's whole snapshot, JSON-ready."""
    from candlekeep.sources.ratelimit import WeightLimiter

    limiter = getattr(source, "limiter", None)
    if not isinstance(limiter, WeightLimiter):
        return None, None
    snap = limiter.snapshot()
    return (Budget(snap.used, snap.effective_budget, snap.advertised_budget, snap.window_s),
            snap.as_dict())


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One source's health at ``checked_at`` (epoch ms), as one process saw it."""

    source: str
    type: str
    status: ProviderStatus
    reasons: list[str]
    """Why it is not up (empty when up)."""
    score: float
    circuit: CircuitState
    circuit_since: int
    circuit_until: int | None
    """While open: when the first probe may go."""
    calls: int
    """Answered calls in the circuit's window (``window_s``)."""
    failures: int
    error_rate: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    window_s: float
    requests: int
    """Requests since the last check (since the process started, at its first check)."""
    retries: int
    rate_limited: int
    rate_limited_rate: float | None
    rejected: int
    """Requests the circuit refused since the source was made."""
    last_error: str | None
    budget_used: int | None
    budget: int | None
    budget_advertised: int | None
    limiter: dict[str, Any] | None
    """The rate limiter's own snapshot when it offers one (an adaptive budget)."""
    probe_error: str | None
    """Set when this check's probe request failed."""
    probed: bool
    """Whether this check sent a probe request."""
    checked_at: int


def snapshot_score(snap: CircuitSnapshot) -> float:
    """``health_score`` of what a circuit saw in its window."""
    return health_score(snap.state, snap.calls, snap.failures, snap.latency_p95_s)


def judge(snap: CircuitSnapshot, counters: Counters, budget: Budget | None,
          probe_error: str | None, thresholds: Thresholds) -> tuple[ProviderStatus, list[str]]:
    """The status and its reasons (see the module docstring for the rules)."""
    if snap.state is CircuitState.OPEN:
        return ProviderStatus.DOWN, [f"circuit open: {snap.last_error or 'failures'}"]
    reasons = []
    if snap.state is CircuitState.HALF_OPEN:
        reasons.append("circuit half-open (probing whether it recovered)")
    if (snap.error_rate is not None and snap.calls >= thresholds.min_requests
            and snap.error_rate >= thresholds.error_rate):
        reasons.append(f"error rate {snap.error_rate:.0%} of {snap.calls} calls in "
                       f"{snap.window_s:g}s")
    if counters.requests >= thresholds.min_requests:
        rate = counters.rate_limited / counters.requests
        if rate >= thresholds.rate_limited_rate:
            reasons.append(f"429 rate {rate:.0%} of {counters.requests} requests")
    if budget is not None and budget.cut:
        reasons.append(f"budget cut to {budget.budget} of {budget.advertised} advertised")
    if probe_error is not None:
        reasons.append(f"probe failed: {probe_error}")
    return (ProviderStatus.DEGRADED if reasons else ProviderStatus.UP), reasons


def provider_health(source: Source, source_type: str, since: Counters, now_ms: int, *,
                    thresholds: Thresholds | None = None, probe_error: str | None = None,
                    probed: bool = False) -> ProviderHealth:
    """``source``'s health now; ``since`` holds its counters at the previous check
    (``Counters()`` at the first)."""
    snap = source.circuit.snapshot()
    delta = Counters.of(source) - since
    budget, limiter = budget_of(source)
    status, reasons = judge(snap, delta, budget, probe_error, thresholds or Thresholds())
    reasons = [source.redact(r) for r in reasons]  # they quote the last error, unredacted
    return ProviderHealth(
        source=source.name, type=source_type, status=status, reasons=reasons,
        score=snapshot_score(snap),
        circuit=snap.state, circuit_since=snap.since_ms, circuit_until=snap.until_ms,
        calls=snap.calls, failures=snap.failures, error_rate=snap.error_rate,
        latency_p50_s=snap.latency_p50_s, latency_p95_s=snap.latency_p95_s,
        window_s=snap.window_s, requests=delta.requests, retries=delta.retries,
        rate_limited=delta.rate_limited,
        rate_limited_rate=(delta.rate_limited / delta.requests if delta.requests else None),
        rejected=snap.rejected, last_error=source.redact(snap.last_error or "") or None,
        budget_used=budget.used if budget else None, budget=budget.budget if budget else None,
        budget_advertised=budget.advertised if budget else None, limiter=limiter,
        probe_error=probe_error, probed=probed, checked_at=now_ms)


async def probe(source: Source, series: SeriesKey | None) -> tuple[bool, str | None]:
    """One light request through ``source.call`` (so through its circuit), for a provider
    nobody asked lately: the newest closed candles of ``series`` (one page), or, for a
    source without configured series, its market list (a request only when not loaded
    yet). Returns whether a request went out and the error, if any: a probe the circuit
    refused sent nothing, so it is not counted as one (its error says the circuit is
    open)."""
    from candlekeep.core.errors import SourceError
    from candlekeep.sources.circuit import CircuitOpenError

    before = source.stats.requests
    try:
        if series is None:
            await source.markets()
        else:
            tf = source.timeframe(series.timeframe)
            end = tf.floor(source.clock.now_ms())
            await source.fetch_candles(series.symbol, series.timeframe, end - 2 * tf.ms, end)
    except CircuitOpenError as exc:
        return False, f"circuit {exc.state.value.replace('_', '-')}, not sent: " \
            + source.redact(str(exc))
    except SourceError as exc:
        return True, source.redact(str(exc))
    return source.stats.requests > before, None


__all__ = ["SLOW_S", "UNKNOWN_SCORE", "Budget", "Counters", "ProviderHealth",
           "ProviderStatus", "Thresholds", "budget_of", "health_score", "judge",
           "probe", "provider_health", "snapshot_score"]
