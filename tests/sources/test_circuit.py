"""The circuit breaker's state machine, driven by a FakeClock (no sleeps)."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from pydantic import ValidationError

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import (
    BadReplyError,
    GeoBlockedError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.timeutil import to_ms
from candlekeep.sources.circuit import (
    CIRCUIT_DEFAULTS,
    CircuitBreaker,
    CircuitChange,
    CircuitConfig,
    CircuitOpenError,
    CircuitState,
    circuit_config,
    counts_against,
)
from candlekeep.sources.retry import RetryPolicy, call_with_retry

T0 = to_ms("2025-01-01T00:00:00Z")
OPEN, CLOSED, HALF = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


def http_503() -> TransientSourceError:
    return TransientSourceError("source binance: HTTP 503 Service Unavailable")


def bad_symbol() -> SourceError:
    return SourceError("source binance: HTTP 400 Bad Request: invalid symbol")


class Rig:
    """A breaker on a FakeClock that records its transitions."""

    def __init__(self, **config: object) -> None:
        self.clock = FakeClock(T0)
        self.changes: list[CircuitChange] = []
        self.breaker = CircuitBreaker("binance", CircuitConfig.model_validate(config),
                                      clock=self.clock, on_change=self.changes.append)

    def at(self, seconds: float) -> None:
        self.clock.set(T0 + round(seconds * 1000))

    def ok(self, latency_ms: int = 0) -> None:
        permit = self.breaker.before()
        self.clock.set(self.clock.now_ms() + latency_ms)
        permit.succeeded()

    def fail(self, exc: BaseException | None = None, latency_ms: int = 0) -> None:
        permit = self.breaker.before()
        self.clock.set(self.clock.now_ms() + latency_ms)
        permit.failed(exc if exc is not None else http_503())

    def transitions(self) -> list[tuple[CircuitState, CircuitState]]:
        return [(c.old, c.new) for c in self.changes]


# ---------------------------------------------------------------- closed -> open


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    rig = Rig(failures=5, error_rate=None)
    for _ in range(4):
        rig.fail()
    rig.ok()  # four in a row, then an answer: the count starts again
    for _ in range(4):
        rig.fail()
    assert rig.breaker.state is CLOSED
    assert rig.breaker.snapshot().consecutive_failures == 4
    rig.fail()
    assert rig.breaker.state is OPEN
    assert rig.changes == [CircuitChange("binance", CLOSED, OPEN, T0, "5 consecutive failures",
                                         until_ms=T0 + 30_000)]


def test_open_fails_fast_naming_the_source_the_time_and_the_last_error() -> None:
    rig = Rig(failures=5, cooldown=30)
    for _ in range(5):
        rig.fail()
    with pytest.raises(CircuitOpenError) as info:
        rig.breaker.before()
    assert str(info.value) == (
        "source binance: circuit open until 2025-01-01 00:00:30 UTC "
        "(after 5 consecutive failures: HTTP 503 Service Unavailable)")
    assert info.value.until_ms == T0 + 30_000
    assert info.value.source == "binance" and info.value.state is OPEN
    # Not transient: a retry loop gives up on it at once.
    assert isinstance(info.value, SourceError)
    assert not isinstance(info.value, TransientSourceError)
    with pytest.raises(CircuitOpenError):
        rig.breaker.check()
    assert rig.breaker.available is False
    assert rig.breaker.snapshot().rejected == 1  # check() takes no slot and counts nothing


def test_error_rate_over_the_window_opens_once_min_calls_are_in() -> None:
    rig = Rig(failures=100, error_rate=0.5, window=60, min_calls=10)
    for i in range(4):  # 8 calls, half failed: the rate is there but the calls are not
        rig.at(i)
        rig.ok()
        rig.fail()
    assert rig.breaker.state is CLOSED
    rig.at(5)
    rig.ok()
    rig.fail()  # 10 calls, 5 failed
    assert rig.breaker.state is OPEN
    assert rig.changes[-1].reason == "5 failures in 10 calls in the last 60s"
    with pytest.raises(CircuitOpenError, match=r"after 5 failures in 10 calls in the last 60s: "
                                               r"HTTP 503"):
        rig.breaker.before()


def test_error_rate_forgets_calls_older_than_the_window() -> None:
    rig = Rig(failures=100, error_rate=0.5, window=60, min_calls=10)
    for _ in range(9):
        rig.fail()  # at T0
    rig.at(60)  # those nine are exactly one window old: out
    for _ in range(6):
        rig.ok()
    for _ in range(4):
        rig.fail()  # 10 calls in the window, 4 failed: under half
    assert rig.breaker.state is CLOSED
    snap = rig.breaker.snapshot()
    assert (snap.calls, snap.failures, snap.error_rate) == (10, 4, 0.4)


def test_error_rate_none_means_consecutive_failures_only() -> None:
    rig = Rig(failures=3, error_rate=None, min_calls=1)
    for _ in range(10):
        rig.fail()
        rig.fail()
        rig.ok()
    assert rig.breaker.state is CLOSED
    assert rig.breaker.snapshot().error_rate == pytest.approx(20 / 30)


# ---------------------------------------------------------------- what counts


@pytest.mark.parametrize(("exc", "counts"), [
    (TransientSourceError("HTTP 502"), True),
    (RateLimitedError("HTTP 429", retry_after=1.0), True),
    (RateLimitedError("HTTP 418 banned"), True),
    (TimeoutError("read timed out"), True),
    (ConnectionResetError("reset by peer"), True),
    (SourceError("HTTP 400: invalid symbol"), False),
    (GeoBlockedError("HTTP 451"), False),
    (BadReplyError("binance", "BTC/USDT", "ts not on the grid"), False),
    (CircuitOpenError("open", source="x", state=OPEN, until_ms=None), False),
    (ValueError("a bug of ours"), False),
])
def test_counts_against(exc: BaseException, counts: bool) -> None:
    assert counts_against(exc) is counts


def test_client_errors_do_not_count_they_are_answers() -> None:
    rig = Rig(failures=3, error_rate=0.5, min_calls=4)
    for _ in range(20):
        rig.fail(bad_symbol())
    assert rig.breaker.state is CLOSED
    snap = rig.breaker.snapshot()
    assert (snap.consecutive_failures, snap.failures, snap.calls) == (0, 0, 20)
    assert snap.last_error is None
    # ...and an answer breaks a run of real failures like a success does.
    rig.fail()
    rig.fail()
    rig.fail(bad_symbol())
    rig.fail()
    rig.fail()
    assert rig.breaker.state is CLOSED
    assert rig.changes == []


def test_other_exceptions_count_nothing_either_way() -> None:
    rig = Rig(failures=2, error_rate=None)
    rig.fail()
    rig.fail(ValueError("a bug in our parser"))
    assert rig.breaker.snapshot().consecutive_failures == 1  # neither failure nor success
    assert rig.breaker.snapshot().calls == 1


# ---------------------------------------------------------------- open -> half-open -> ...


def open_it(rig: Rig) -> None:
    while rig.breaker.state is not OPEN:
        rig.fail()


def test_cooldown_then_half_open_then_closed_after_the_probes() -> None:
    rig = Rig(failures=2, cooldown=30, probes=2)
    open_it(rig)
    rig.at(30 - 0.001)
    with pytest.raises(CircuitOpenError):
        rig.breaker.before()
    assert rig.breaker.available is False
    rig.at(30)
    assert rig.breaker.available is True
    assert rig.breaker.state is HALF
    probe = rig.breaker.before()
    assert probe.probe
    probe.succeeded()
    assert rig.breaker.state is HALF
    assert rig.breaker.snapshot().probe_successes == 1
    rig.at(31)
    rig.ok()
    assert rig.breaker.state is CLOSED
    assert rig.transitions() == [(CLOSED, OPEN), (OPEN, HALF), (HALF, CLOSED)]
    assert [c.at_ms for c in rig.changes] == [T0, T0 + 30_000, T0 + 31_000]
    assert rig.changes[-1].reason == "2 successful probe(s)"
    snap = rig.breaker.snapshot()
    assert (snap.state, snap.since_ms, snap.until_ms) == (CLOSED, T0 + 31_000, None)
    # The failures that opened it are forgotten: one more does not reopen it.
    rig.fail()
    assert rig.breaker.state is CLOSED


def test_a_failed_probe_reopens_with_the_cooldown_doubled_up_to_the_ceiling() -> None:
    rig = Rig(failures=1, cooldown=30, max_cooldown=100)
    open_it(rig)
    now = 0.0
    cooldowns = []
    for _ in range(4):
        until = rig.breaker.snapshot().until_ms
        assert until is not None
        cooldowns.append((until - (T0 + round(now * 1000))) / 1000)
        now = (until - T0) / 1000
        rig.at(now)
        rig.fail()  # the probe
        assert rig.breaker.state is OPEN
        assert rig.changes[-1].reason == "a failed probe"
    assert cooldowns == [30, 60, 100, 100]
    assert rig.breaker.snapshot().opens_in_a_row == 5
    # Closing resets the doubling.
    until = rig.breaker.snapshot().until_ms
    assert until is not None
    rig.clock.set(until)
    rig.ok()
    rig.ok()
    assert rig.breaker.state is CLOSED
    rig.fail()
    assert rig.breaker.snapshot().until_ms == rig.clock.now_ms() + 30_000


def test_retry_after_keeps_it_open_at_least_that_long() -> None:
    rig = Rig(failures=1, cooldown=30)
    rig.fail(RateLimitedError("source binance: HTTP 429 rate limited", retry_after=120))
    assert rig.breaker.snapshot().until_ms == T0 + 120_000
    rig.at(119)
    assert rig.breaker.state is OPEN


def test_half_open_lets_only_so_many_probes_through() -> None:
    rig = Rig(failures=1, cooldown=10, probes=3, half_open_concurrency=2)
    open_it(rig)
    rig.at(10)
    first, second = rig.breaker.before(), rig.breaker.before()
    with pytest.raises(CircuitOpenError) as info:
        rig.breaker.before()
    assert str(info.value) == ("source binance: circuit half-open (probing whether it "
                               "recovered, 2 probe(s) in flight); try again shortly")
    assert rig.breaker.available is False
    rig.breaker.check()  # half-open is not open: a retry loop may wait for its turn
    first.succeeded()
    third = rig.breaker.before()  # the slot is free again
    second.abandoned()  # cancelled: frees its slot, proves nothing
    fourth = rig.breaker.before()
    assert rig.breaker.snapshot().probes_in_flight == 2
    third.succeeded()
    assert rig.breaker.state is HALF
    fourth.succeeded()
    assert rig.breaker.state is CLOSED
    assert rig.breaker.snapshot().rejected == 1


def test_a_late_reply_from_before_a_transition_moves_nothing() -> None:
    rig = Rig(failures=2, cooldown=10, probes=1)
    slow = [rig.breaker.before() for _ in range(4)]  # sent while closed, answered late
    open_it(rig)
    rig.at(10)
    assert rig.breaker.state is HALF
    slow[0].failed(http_503())  # old news: does not reopen
    assert rig.breaker.state is HALF
    rig.breaker.before().succeeded()
    assert rig.breaker.state is CLOSED
    slow[1].failed(http_503())  # closed again, but that was a different closed spell
    slow[2].failed(http_503())
    assert rig.breaker.state is CLOSED
    snap = rig.breaker.snapshot()
    assert (snap.consecutive_failures, snap.failures) == (0, 2)  # figures, not state
    slow[2].succeeded()  # reported twice: the first report stands
    assert rig.breaker.snapshot().calls == 2
    rig.fail()
    slow[3].succeeded()  # does not break the new run of failures either
    assert rig.breaker.snapshot().consecutive_failures == 1


def test_disabled_never_opens_but_keeps_figures() -> None:
    rig = Rig(enabled=False, failures=1)
    for _ in range(10):
        rig.fail(latency_ms=5)
    assert rig.breaker.state is CLOSED
    rig.breaker.check()
    snap = rig.breaker.snapshot()
    assert (snap.calls, snap.failures, snap.latency_p50_s) == (10, 10, 0.005)
    assert rig.changes == []


# ---------------------------------------------------------------- snapshot and on_change


def test_snapshot_latency_percentiles_and_error_rate_over_the_window() -> None:
    rig = Rig(failures=100, error_rate=None, window=60, latency_samples=512)
    rig.ok(latency_ms=10_000)  # will age out of the window
    rig.at(20)
    for ms in range(1, 101):  # latencies 1..100 ms; every tenth call fails
        if ms % 10 == 0:
            rig.fail(latency_ms=ms)
        else:
            rig.ok(latency_ms=ms)
    rig.at(70)
    snap = rig.breaker.snapshot()
    assert snap.calls == 100
    assert snap.failures == 10
    assert snap.error_rate == pytest.approx(0.1)
    assert snap.latency_p50_s == pytest.approx(0.050)
    assert snap.latency_p95_s == pytest.approx(0.095)
    assert snap.last_error == "HTTP 503 Service Unavailable"
    assert snap.last_failure_ms == T0 + 20_000 + sum(range(1, 101))
    d = snap.as_dict()
    assert d["state"] == "closed" and d["since"] == "2025-01-01T00:00:00.000Z"
    assert d["until"] is None and d["error_rate"] == pytest.approx(0.1)


def test_snapshot_of_an_idle_breaker() -> None:
    snap = Rig().breaker.snapshot()
    assert (snap.state, snap.calls, snap.error_rate, snap.latency_p50_s,
            snap.latency_p95_s) == (CLOSED, 0, None, None, None)


def test_memory_is_bounded() -> None:
    rig = Rig(failures=10**6, error_rate=None, max_calls_kept=16, latency_samples=16)
    for ms in range(100):
        if ms % 2:
            rig.fail()
        else:
            rig.ok(latency_ms=ms)
    snap = rig.breaker.snapshot()
    assert (snap.calls, snap.failures) == (16, 8)
    assert snap.latency_p50_s is not None and snap.latency_p50_s < 0.1


def test_permit_latency_runs_from_sent_or_is_given() -> None:
    rig = Rig()
    permit = rig.breaker.before()
    rig.at(5)  # waiting in a rate limiter, say
    permit.sent()
    rig.at(5.2)
    permit.succeeded()
    rig.breaker.before().succeeded(latency_s=0.2)
    assert rig.breaker.snapshot().latency_p95_s == pytest.approx(0.2)


def test_on_change_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(change: CircuitChange) -> None:
        raise RuntimeError("alert channel down")

    clock = FakeClock(T0)
    breaker = CircuitBreaker("binance", CircuitConfig(failures=1), clock=clock,
                             on_change=broken)
    with caplog.at_level(logging.ERROR, "candlekeep.sources"):
        breaker.before().failed(http_503())
    assert breaker.state is OPEN
    assert "on_change failed" in caplog.text


# ---------------------------------------------------------------- guarding async requests


async def test_guard_classifies_what_the_attempt_raises_and_passes_it_on() -> None:
    rig = Rig(failures=2, cooldown=10, probes=1)

    async def request(exc: BaseException | None) -> str:
        await asyncio.sleep(0)
        if exc is not None:
            raise exc
        return "candles"

    with rig.breaker.guard():
        assert await request(None) == "candles"
    with pytest.raises(SourceError), rig.breaker.guard():
        await request(bad_symbol())
    for _ in range(2):
        with pytest.raises(TransientSourceError), rig.breaker.guard():
            await request(http_503())
    assert rig.breaker.state is OPEN
    with pytest.raises(CircuitOpenError), rig.breaker.guard():
        pytest.fail("the request must not be sent while open")
    assert rig.breaker.snapshot().calls == 4


async def test_a_cancelled_probe_frees_its_slot() -> None:
    rig = Rig(failures=1, cooldown=10, probes=1)
    open_it(rig)
    rig.at(10)
    started = asyncio.Event()

    async def probe() -> None:
        with rig.breaker.guard():
            started.set()
            await asyncio.Event().wait()  # a request that never answers

    task = asyncio.create_task(probe())
    await started.wait()
    with pytest.raises(CircuitOpenError, match="half-open"):
        rig.breaker.before()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.breaker.state is HALF
    rig.ok()
    assert rig.breaker.state is CLOSED


async def test_a_retry_loop_stops_at_once_when_the_circuit_opens() -> None:
    """The wiring suggested for Source.call: each attempt inside ``guard``, and ``check``
    before each backoff sleep."""
    clock = FakeClock(T0, autoadvance=True)
    breaker = CircuitBreaker("binance", CircuitConfig(failures=3), clock=clock)
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        with breaker.guard():
            attempts += 1
            raise http_503()

    def on_retry(retry: int, exc: TransientSourceError, delay: float) -> None:
        breaker.check()

    with pytest.raises(CircuitOpenError, match="after 3 consecutive failures"):
        await call_with_retry(attempt, policy=RetryPolicy(max_attempts=10), clock=clock,
                              rng=random.Random(1), on_retry=on_retry)
    assert attempts == 3
    assert len(clock.slept) == 2  # no sleep after the failure that opened it
    # The next logical request does not even try.
    with pytest.raises(CircuitOpenError):
        await call_with_retry(attempt, policy=RetryPolicy(), clock=clock, on_retry=on_retry)
    assert attempts == 3


# ---------------------------------------------------------------- config


def test_defaults_per_source_type_with_overrides_key_by_key() -> None:
    assert set(CIRCUIT_DEFAULTS) == {"ccxt", "sim", "hyperliquid", "coingecko"}
    cg = circuit_config("coingecko", CircuitConfig.model_validate({"failures": 7,
                                                                   "cooldown": "2m"}))
    assert (cg.failures, cg.cooldown, cg.window, cg.probes) == (7, 120.0, 300.0, 1)
    assert circuit_config("ccxt") is CIRCUIT_DEFAULTS["ccxt"]
    assert circuit_config("someday", None) == CircuitConfig()
    # A cool-down above the default ceiling is honoured, not an error.
    long = circuit_config("ccxt", CircuitConfig.model_validate({"cooldown": "10m"}))
    assert long.cooldown_s(1) == long.cooldown_s(5) == 600.0


@pytest.mark.parametrize("bad", [{"failures": 0}, {"error_rate": 1.5}, {"cooldown": "soon"},
                                 {"probes": 0}, {"cooldown_s": 5}])
def test_bad_config_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CircuitConfig.model_validate(bad)


# ---------------------------------------------------------------- rate-limit episodes


def test_the_429s_of_one_episode_count_once_and_a_ban_always_counts() -> None:
    from candlekeep.core.errors import BannedError

    rig = Rig(failures=3, error_rate=None)
    in_flight = [rig.breaker.before() for _ in range(4)]
    for permit in in_flight:  # all sent before the first 429 came back
        permit.failed(RateLimitedError("source binance: HTTP 429", 10.0))
    assert rig.breaker.state is CLOSED
    assert rig.breaker.snapshot().consecutive_failures == 1
    rig.at(11)  # Retry-After passed: a new 429 is a new episode
    rig.fail(RateLimitedError("source binance: HTTP 429", 10.0))
    assert rig.breaker.snapshot().consecutive_failures == 2
    rig.fail(BannedError("source binance: HTTP 418", 120.0))  # inside the episode, counts
    assert rig.breaker.state is OPEN
    assert rig.breaker.snapshot().until_ms == T0 + 11_000 + 120_000  # never before the ban


def test_a_request_refused_while_probes_run_is_retried_not_failed() -> None:
    from candlekeep.sources.circuit import CircuitProbingError

    rig = Rig(failures=1, cooldown=30, probes=1)
    rig.fail()
    rig.at(31)
    probe = rig.breaker.before()  # half-open: the one probe slot
    with pytest.raises(CircuitProbingError) as info:
        rig.breaker.before()
    assert isinstance(info.value, TransientSourceError)  # a retry loop waits and tries again
    assert isinstance(info.value, CircuitOpenError)  # still "the circuit refused"
    assert not counts_against(info.value)
    probe.succeeded()
    assert rig.breaker.state is CLOSED
    rig.ok()  # the retry goes through
