"""A circuit breaker per source: stop hammering a provider that is down, find out by itself
when it is back.

States::

    closed ──(N consecutive failures, or the error rate over the window)──▶ open
    open ──(cool-down elapsed, seen by the next request)──▶ half_open
    half_open ──(M successful probes)──▶ closed
    half_open ──(a probe fails)──▶ open, with the cool-down doubled (up to max_cooldown)

Only failures that say something about the provider's health count: timeouts, connection
errors, 5xx and truncated replies (``TransientSourceError``) and 429/418
(``RateLimitedError``). A plain ``SourceError`` (a 4xx for a bad symbol, a refused
parameter) is the caller's mistake: the provider answered, so for the breaker it is an
answer like any other. While open, ``before()`` raises ``CircuitOpenError`` at once; it is a
plain ``SourceError``, not a transient one, so a retry loop stops instead of sleeping
through its backoffs. A request refused in half-open because the probe slots are taken gets
``CircuitProbingError``, which *is* transient: the probes settle the state in moments.
The 429s of one rate-limit episode (every request in flight when the first came back)
count as one failure.

One request attempt is wrapped as::

    with breaker.guard():          # CircuitOpenError here while open
        reply = await request()    # success, or an exception classified by counts_against

or by hand with ``permit = breaker.before()`` and ``permit.succeeded()`` /
``permit.failed(exc)`` / ``permit.abandoned()``. A permit remembers the state generation it
was granted in: a reply that comes back after the circuit moved on (a request sent while
closed that fails after the circuit opened) feeds the statistics but not the state machine.

Concurrency: a breaker belongs to one Source, used from one event loop. Every method is
synchronous (nothing in here awaits), so each check-and-update runs without interleaving
and no lock is needed. It is not safe to share between threads or event loops.

Time comes from the injected Clock: tests move a FakeClock instead of sleeping. There are
no timers: open becomes half-open when the first request (or ``state``/``snapshot``) looks
after the cool-down.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.errors import (
    BannedError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.timeutil import fmt_ms, iso_ms, parse_duration

log = logging.getLogger("candlekeep.sources")

Duration = Annotated[float, BeforeValidator(parse_duration)]


class CircuitState(StrEnum):
    CLOSED = "closed"
    """Requests flow; failures are counted."""
    OPEN = "open"
    """Requests fail fast until the cool-down ends."""
    HALF_OPEN = "half_open"
    """A few probe requests find out whether the provider is back."""


class CircuitConfig(BaseModel):
    """How a source's circuit breaker trips and recovers (``circuit:`` under a source).

    Durations take ``30s``, ``5m`` or a number of seconds. A config that sets only some
    keys is merged over the source type's defaults by ``circuit_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Off: every request goes through; the statistics are still kept."""
    failures: int = Field(default=5, ge=1)
    """Consecutive counted failures that open the circuit."""
    error_rate: float | None = Field(default=0.5, gt=0.0, le=1.0)
    """Share of counted failures over ``window`` that opens it (None: consecutive only)."""
    window: Duration = Field(default=60.0, gt=0.0)
    """Seconds of calls the error rate and the latency percentiles look at."""
    min_calls: int = Field(default=20, ge=1)
    """Calls in the window before the error rate can open the circuit."""
    cooldown: Duration = Field(default=30.0, gt=0.0)
    """Seconds open before the first probe; doubles each time a probe fails."""
    max_cooldown: Duration = Field(default=300.0, gt=0.0)
    """Ceiling of the doubled cool-down (never below ``cooldown``)."""
    probes: int = Field(default=2, ge=1)
    """Successful probes in half-open that close the circuit."""
    half_open_concurrency: int = Field(default=1, ge=1)
    """Probes allowed in flight at once in half-open; other requests fail fast."""
    max_calls_kept: int = Field(default=4096, ge=16)
    """Bound on the calls remembered for the error rate (the most recent win)."""
    latency_samples: int = Field(default=512, ge=16)
    """Bound on the latencies remembered for p50/p95 (the most recent win)."""

    def cooldown_s(self, opens: int) -> float:
        """The cool-down of the ``opens``-th open in a row (1-based): doubled each time."""
        ceiling = max(self.cooldown, self.max_cooldown)
        return min(ceiling, self.cooldown * 2.0 ** min(opens - 1, 30))


CIRCUIT_DEFAULTS: dict[str, CircuitConfig] = {
    # Exchanges over REST: a few timeouts in a row while pages run 16 at a time mean down.
    "ccxt": CircuitConfig(failures=5, error_rate=0.5, window=60, min_calls=20, cooldown=30,
                          max_cooldown=300, probes=2),
    # The simulated exchange: same rules, short cool-downs so that a dev loop recovers fast.
    "sim": CircuitConfig(failures=5, error_rate=0.5, window=60, min_calls=20, cooldown=5,
                         max_cooldown=60, probes=2),
    # Hyperliquid's /info: one endpoint for everything, 1200 weight a minute per IP.
    "hyperliquid": CircuitConfig(failures=5, error_rate=0.5, window=60, min_calls=20,
                                 cooldown=30, max_cooldown=300, probes=2),
    # CoinGecko: ~30 calls a minute on the demo plan, limits counted per minute, so few
    # calls per window, a minute-long cool-down and a single probe.
    "coingecko": CircuitConfig(failures=3, error_rate=0.5, window=300, min_calls=10,
                               cooldown=60, max_cooldown=900, probes=1),
}
"""Per source type; a source's own ``circuit:`` keys override these one by one."""


def circuit_config(source_type: str, override: CircuitConfig | None = None) -> CircuitConfig:
    """The defaults of ``source_type`` with the keys ``override`` sets explicitly on top."""
    base = CIRCUIT_DEFAULTS.get(source_type, CircuitConfig())
    if override is None:
        return base
    merged = base.model_dump() | override.model_dump(include=set(override.model_fields_set))
    return CircuitConfig.model_validate(merged)


class CircuitOpenError(SourceError):
    """The source's circuit refuses the request (open, or half-open with its probes taken).

    Not transient on purpose: retrying cannot help before ``until_ms``."""

    def __init__(self, message: str, *, source: str, state: CircuitState,
                 until_ms: int | None) -> None:
        super().__init__(message)
        self.source = source
        self.state = state
        self.until_ms = until_ms


class CircuitProbingError(CircuitOpenError, TransientSourceError):
    """Refused while half-open because the probe slots are taken: transient, unlike an open
    circuit, since the probes will settle it within moments (closed: the retry goes
    through; open again: the retry hook's ``check()`` stops it)."""


def counts_against(exc: BaseException) -> bool:
    """Whether ``exc`` says the provider is unwell: timeouts, connection errors, 5xx,
    truncated replies, 429/418. A 4xx SourceError (bad symbol, refused parameter) does not:
    it is the caller's mistake and the provider answered."""
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, TransientSourceError):
        return True
    return isinstance(exc, TimeoutError | ConnectionError)


@dataclass(frozen=True, slots=True)
class CircuitChange:
    """One transition, as ``on_change`` receives it."""

    source: str
    old: CircuitState
    new: CircuitState
    at_ms: int
    reason: str
    until_ms: int | None = None
    """Set when ``new`` is open: when the first probe may go."""


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """A typed view of one breaker for health reports; window figures cover ``window_s``."""

    source: str
    state: CircuitState
    since_ms: int
    until_ms: int | None
    consecutive_failures: int
    opens_in_a_row: int
    window_s: float
    calls: int
    failures: int
    error_rate: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    last_error: str | None
    last_failure_ms: int | None
    probes_in_flight: int
    probe_successes: int
    rejected: int
    """Requests refused while open or half-open, since the breaker was made."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times as ISO 8601 UTC."""
        return {
            "source": self.source, "state": str(self.state), "since": iso_ms(self.since_ms),
            "until": iso_ms(self.until_ms),
            "consecutive_failures": self.consecutive_failures,
            "opens_in_a_row": self.opens_in_a_row, "window_s": self.window_s,
            "calls": self.calls, "failures": self.failures, "error_rate": self.error_rate,
            "latency_p50_s": self.latency_p50_s, "latency_p95_s": self.latency_p95_s,
            "last_error": self.last_error, "last_failure": iso_ms(self.last_failure_ms),
            "probes_in_flight": self.probes_in_flight, "probe_successes": self.probe_successes,
            "rejected": self.rejected,
        }


OnChange = Callable[[CircuitChange], None]


class Permit:
    """One attempt let through; report how it ended exactly once (later reports are
    ignored). Latency runs from the grant, or from ``sent()`` when the caller marks the
    moment the request actually left (after a rate limiter's wait, say)."""

    __slots__ = ("_breaker", "_done", "_probe", "_start_ms", "generation")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool,
                 start_ms: int) -> None:
        self._breaker = breaker
        self.generation = generation
        self._probe = probe
        self._start_ms = start_ms
        self._done = False

    @property
    def probe(self) -> bool:
        return self._probe

    def sent(self) -> None:
        """Start the latency clock now."""
        self._start_ms = self._breaker.clock.now_ms()

    def succeeded(self, latency_s: float | None = None) -> None:
        if self._finish():
            self._breaker._on_success(self, self._latency(latency_s))

    def failed(self, exc: BaseException, latency_s: float | None = None) -> None:
        """The attempt raised ``exc``: a failure when ``counts_against(exc)``; an answer
        (like a success) when it is another SourceError (the provider answered, with a
        4xx); nothing (``abandoned``) when it was cancelled, refused by a circuit, or any
        other exception, which says nothing about the provider either way."""
        if counts_against(exc):
            if self._finish():
                self._breaker._on_failure(self, exc, self._latency(latency_s))
        elif isinstance(exc, SourceError) and not isinstance(exc, CircuitOpenError):
            self.succeeded(latency_s)
        else:
            self.abandoned()

    def abandoned(self) -> None:
        """The attempt ended without an answer (cancelled, say): frees a probe slot,
        counts nothing."""
        if self._finish():
            self._breaker._on_abandon(self)

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        return True

    def _latency(self, latency_s: float | None) -> float:
        if latency_s is not None:
            return latency_s
        return max(0, self._breaker.clock.now_ms() - self._start_ms) / 1000


class CircuitBreaker:
    """The circuit of one source (see the module docstring for states and rules)."""

    def __init__(self, name: str, config: CircuitConfig | None = None, *,
                 clock: Clock | None = None, on_change: OnChange | None = None) -> None:
        self.name = name
        self.config = config or CircuitConfig()
        self.clock: Clock = clock or SystemClock()
        self.on_change = on_change
        """Called after every transition (an observer: tests record them); its errors are
        logged, never raised into the request."""
        self._state = CircuitState.CLOSED
        self._since_ms = self.clock.now_ms()
        self._until_ms: int | None = None
        self._generation = 0
        self._consecutive = 0
        self._opens = 0  # opens since the circuit was last closed
        self._reason = ""
        self._last_error: str | None = None
        self._last_failure_ms: int | None = None
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._rejected = 0
        self._rate_episode_until_ms = 0
        # (ts_ms, failed) of answered calls, oldest first; _window_failures counts the True.
        self._calls: deque[tuple[int, bool]] = deque()
        self._window_failures = 0
        self._latencies: deque[tuple[int, float]] = deque(maxlen=self.config.latency_samples)

    # ------------------------------------------------------------------ guarding a request

    def before(self) -> Permit:
        """Let one attempt through, or raise CircuitOpenError."""
        self._refresh()
        now = self.clock.now_ms()
        if not self.config.enabled or self._state is CircuitState.CLOSED:
            return Permit(self, self._generation, False, now)
        if self._state is CircuitState.HALF_OPEN:
            if self._probes_in_flight < self.config.half_open_concurrency:
                self._probes_in_flight += 1
                return Permit(self, self._generation, True, now)
            self._rejected += 1
            raise CircuitProbingError(
                f"source {self.name}: circuit half-open (probing whether it recovered, "
                f"{self._probes_in_flight} probe(s) in flight); try again shortly",
                source=self.name, state=self._state, until_ms=None)
        self._rejected += 1
        raise self._open_error()

    def check(self) -> None:
        """Raise CircuitOpenError while open (takes no slot): for a retry loop to call
        before it sleeps, so that it stops at once instead of sleeping through backoffs."""
        self._refresh()
        if self.config.enabled and self._state is CircuitState.OPEN:
            raise self._open_error()

    @contextmanager
    def guard(self) -> Iterator[Permit]:
        """Wrap one attempt: ``with breaker.guard(): reply = await request()``.

        A plain ``with`` (nothing here awaits). The attempt's exception passes through
        unchanged after being classified."""
        permit = self.before()
        try:
            yield permit
        except BaseException as exc:
            permit.failed(exc)
            raise
        else:
            permit.succeeded()

    # ------------------------------------------------------------------ looking at it

    @property
    def state(self) -> CircuitState:
        self._refresh()
        return self._state

    @property
    def available(self) -> bool:
        """Whether a request could go now (for choosing among fallbacks); takes no slot."""
        self._refresh()
        return (not self.config.enabled or self._state is CircuitState.CLOSED
                or (self._state is CircuitState.HALF_OPEN
                    and self._probes_in_flight < self.config.half_open_concurrency))

    def snapshot(self) -> CircuitSnapshot:
        self._refresh()
        now = self.clock.now_ms()
        self._evict(now)
        calls = len(self._calls)
        horizon = now - self._window_ms
        recent = sorted(lat for ts, lat in self._latencies if ts > horizon)
        return CircuitSnapshot(
            source=self.name, state=self._state, since_ms=self._since_ms,
            until_ms=self._until_ms, consecutive_failures=self._consecutive,
            opens_in_a_row=self._opens, window_s=self.config.window, calls=calls,
            failures=self._window_failures,
            error_rate=self._window_failures / calls if calls else None,
            latency_p50_s=_percentile(recent, 0.50), latency_p95_s=_percentile(recent, 0.95),
            last_error=self._last_error, last_failure_ms=self._last_failure_ms,
            probes_in_flight=self._probes_in_flight, probe_successes=self._probe_successes,
            rejected=self._rejected)

    # ------------------------------------------------------------------ outcomes

    def _on_success(self, permit: Permit, latency_s: float) -> None:
        now = self.clock.now_ms()
        self._record(now, False, latency_s)
        if permit.generation != self._generation:
            return  # granted before the last transition: statistics only
        if self._state is CircuitState.CLOSED:
            self._consecutive = 0
        elif self._state is CircuitState.HALF_OPEN and permit.probe:
            self._probes_in_flight -= 1
            self._probe_successes += 1
            if self._probe_successes >= self.config.probes:
                self._transition(CircuitState.CLOSED, now,
                                 f"{self._probe_successes} successful probe(s)")

    def _on_failure(self, permit: Permit, exc: BaseException, latency_s: float) -> None:
        now = self.clock.now_ms()
        self._last_error = _without_prefix(str(exc) or type(exc).__name__, self.name)
        self._last_failure_ms = now
        if self._same_rate_limit_episode(exc, now):
            self._latencies.append((now, latency_s))
            return  # requests already in flight when the first 429 came: one failure
        self._record(now, True, latency_s)
        if permit.generation != self._generation or not self.config.enabled:
            return
        retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
        if self._state is CircuitState.CLOSED:
            self._consecutive += 1
            if self._consecutive >= self.config.failures:
                self._open(now, f"{self._consecutive} consecutive failures", retry_after)
            elif self._rate_exceeded():
                calls = len(self._calls)
                self._open(now, f"{self._window_failures} failures in {calls} calls in the "
                                f"last {self.config.window:g}s", retry_after)
        elif self._state is CircuitState.HALF_OPEN and permit.probe:
            self._probes_in_flight -= 1
            self._consecutive += 1
            self._open(now, "a failed probe", retry_after)

    def _same_rate_limit_episode(self, exc: BaseException, now: int) -> bool:
        """Whether ``exc`` is a 429 of a rate-limit episode already counted. Requests in
        flight when the first 429 arrives all get one; counting each would open a circuit
        on one burst (CoinGecko's opens at 3) where waiting out Retry-After is the cure.
        A ban (418) always counts."""
        if not isinstance(exc, RateLimitedError) or isinstance(exc, BannedError):
            return False
        if now < self._rate_episode_until_ms:
            return True
        wait_s = exc.retry_after if exc.retry_after is not None else 1.0
        self._rate_episode_until_ms = now + round(wait_s * 1000)
        return False

    def _on_abandon(self, permit: Permit) -> None:
        if (permit.generation == self._generation and permit.probe
                and self._state is CircuitState.HALF_OPEN):
            self._probes_in_flight -= 1

    # ------------------------------------------------------------------ the machine

    @property
    def _window_ms(self) -> int:
        return round(self.config.window * 1000)

    def _refresh(self) -> None:
        """Open turns half-open once the cool-down is over."""
        if (self._state is CircuitState.OPEN and self._until_ms is not None
                and self.clock.now_ms() >= self._until_ms):
            self._transition(CircuitState.HALF_OPEN, self.clock.now_ms(), "cool-down over")

    def _open(self, now: int, reason: str, retry_after: float | None) -> None:
        self._opens += 1
        cooldown = self.config.cooldown_s(self._opens)
        if retry_after is not None:  # the provider said when: never probe before that
            cooldown = max(cooldown, retry_after)
        self._reason = reason
        self._transition(CircuitState.OPEN, now, reason, until_ms=now + round(cooldown * 1000))

    def _transition(self, new: CircuitState, now: int, reason: str, *,
                    until_ms: int | None = None) -> None:
        old = self._state
        self._state = new
        self._since_ms = now
        self._until_ms = until_ms
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if new is CircuitState.CLOSED:
            self._opens = 0
            self._consecutive = 0
            self._calls.clear()  # the failures that opened it must not reopen it
            self._window_failures = 0
        level = logging.WARNING if new is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit source=%s %s -> %s reason=%r until=%s last_error=%r",
                self.name, old, new, reason, fmt_ms(until_ms), self._last_error)
        if self.on_change is not None:
            try:
                self.on_change(CircuitChange(self.name, old, new, now, reason, until_ms))
            except Exception:
                log.exception("circuit source=%s: on_change failed", self.name)

    def _open_error(self) -> CircuitOpenError:
        last = f": {self._last_error}" if self._last_error else ""
        return CircuitOpenError(
            f"source {self.name}: circuit open until {fmt_ms(self._until_ms)} UTC "
            f"(after {self._reason}{last})",
            source=self.name, state=CircuitState.OPEN, until_ms=self._until_ms)

    def _record(self, now: int, failed: bool, latency_s: float) -> None:
        self._evict(now)
        if len(self._calls) >= self.config.max_calls_kept:
            _, old_failed = self._calls.popleft()
            self._window_failures -= old_failed
        self._calls.append((now, failed))
        self._window_failures += failed
        self._latencies.append((now, latency_s))

    def _evict(self, now: int) -> None:
        horizon = now - self._window_ms
        while self._calls and self._calls[0][0] <= horizon:
            _, failed = self._calls.popleft()
            self._window_failures -= failed

    def _rate_exceeded(self) -> bool:
        rate = self.config.error_rate
        calls = len(self._calls)
        return (rate is not None and calls >= self.config.min_calls
                and self._window_failures >= rate * calls)


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _without_prefix(text: str, name: str) -> str:
    """``text`` without a leading ``source NAME:`` (the open message names it already)."""
    prefix = f"source {name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


__all__ = ["CIRCUIT_DEFAULTS", "CircuitBreaker", "CircuitChange", "CircuitConfig",
           "CircuitOpenError", "CircuitProbingError", "CircuitSnapshot", "CircuitState",
           "OnChange", "Permit", "circuit_config", "counts_against"]
