"""Provider health rules (status, score) and the market-list TTL that doubles while a
provider is unwell, on a real SimSource over the in-process sim exchange."""

from __future__ import annotations

from typing import Any

import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import SourceError, TransientSourceError
from candlekeep.core.series import SeriesKey
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.base import MARKETS_TTL_MS
from candlekeep.sources.circuit import CircuitState
from candlekeep.sources.health import (
    UNKNOWN_SCORE,
    Counters,
    ProviderStatus,
    Thresholds,
    health_score,
    probe,
    provider_health,
)
from candlekeep.sources.sim_source import SimSource

NOW = 1_767_225_600_000
C, H, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


# -- health_score ------------------------------------------------------------------------


def test_score_open_is_zero_whatever_else() -> None:
    assert health_score(OPEN, 100, 0, 0.01) == 0.0
    assert health_score(OPEN, 0, 0, None) == 0.0


def test_score_unknown_is_healthy_but_below_measured_healthy() -> None:
    assert health_score(C, 0, 0, None) == UNKNOWN_SCORE
    assert health_score(C, 50, 0, 0.2) == 1.0
    assert health_score(C, 50, 0, 0.2) > health_score(C, 0, 0, None)
    # … and above a measured provider failing a fifth of its calls
    assert health_score(C, 0, 0, None) > health_score(C, 50, 10, 0.2)


def test_score_success_rate_and_latency() -> None:
    assert health_score(C, 10, 1, 0.5) == 0.9
    assert health_score(C, 10, 0, 4.0) == 0.5  # p95 twice SLOW_S halves it
    assert health_score(C, 10, 0, 2.0) == 1.0  # at SLOW_S: not slow yet
    assert health_score(C, 10, 5, 4.0) == 0.25
    assert health_score(C, 10, 10, 0.1) == 0.0


def test_score_half_open_halves() -> None:
    assert health_score(H, 10, 0, 0.1) == 0.5
    assert health_score(H, 0, 0, None) == 0.5 * UNKNOWN_SCORE
    assert health_score(C, 0, 0, None) > health_score(H, 10, 0, 0.1)


@pytest.mark.parametrize("calls,failures,p95", [(1, 0, None), (7, 3, 0.3), (100, 1, 9.0),
                                                (3, 5, 1.0)])
def test_score_in_unit_interval_and_monotone(calls: int, failures: int,
                                             p95: float | None) -> None:
    s = health_score(C, calls, failures, p95)
    assert 0.0 <= s <= 1.0
    assert health_score(C, calls, min(calls, failures + 1), p95) <= s
    assert health_score(H, calls, failures, p95) <= s


# -- status ------------------------------------------------------------------------------


def _sim(clock: FakeClock, ex: SimExchange | None = None) -> SimSource:
    return SimSource("sim", exchange=ex or SimExchange(7, clock=clock), clock=clock,
                     max_attempts=1)


async def test_a_source_nobody_asked_is_up_and_unknown() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    h = provider_health(_sim(clock), "sim", Counters(), clock.now_ms())
    assert h.status is ProviderStatus.UP and h.reasons == []
    assert h.score == UNKNOWN_SCORE and h.calls == 0 and h.requests == 0
    assert h.circuit is C and h.budget is None and not h.probed


async def test_open_circuit_is_down_and_half_open_degraded() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _sim(clock, ex)
    ex.force("503", 10)
    for _ in range(5):  # five consecutive 5xx open the sim's circuit
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert h.status is ProviderStatus.DOWN and h.score == 0.0 and h.circuit is OPEN
    assert "503" in h.reasons[0] and h.failures == 5 and h.circuit_until is not None
    clock.set(h.circuit_until)  # cool-down over: half-open
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert h.status is ProviderStatus.DEGRADED and h.circuit is H
    assert any("half-open" in r for r in h.reasons)


async def test_error_and_429_rates_judged_since_the_last_check() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _sim(clock, ex)
    for _ in range(8):
        await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    ex.force("429", 2)
    for _ in range(2):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    ex.force("503", 2)
    for _ in range(2):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert h.requests == 12 and h.rate_limited == 2
    # The circuit counts the two 429s of one episode as one failure: 3 of 11 calls.
    assert (h.calls, h.failures) == (11, 3)
    assert h.status is ProviderStatus.DEGRADED
    assert any(r.startswith("429 rate 17% of 12") for r in h.reasons)
    assert any(r.startswith("error rate 27% of 11 calls") for r in h.reasons)
    # Since a check made now, nothing new: the rates are not judged (too few requests) …
    later = provider_health(src, "sim", Counters.of(src), clock.now_ms())
    assert later.requests == 0 and later.rate_limited_rate is None
    assert not any(r.startswith("429") for r in later.reasons)
    # … and looser thresholds judge the same counters up.
    loose = provider_health(src, "sim", Counters(), clock.now_ms(),
                            thresholds=Thresholds(error_rate=0.5, rate_limited_rate=0.5))
    assert loose.status is ProviderStatus.UP


async def test_probe_asks_the_newest_candles_through_the_circuit() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _sim(clock, ex)
    series = SeriesKey("sim", "BTC/USDT", "1m")
    assert await probe(src, series) == (True, None)
    assert src.stats.requests == 1 and src.circuit.snapshot().calls == 1
    ex.force("502")
    probed, error = await probe(src, series)
    assert probed and error is not None and "502" in error
    assert await probe(src, None) == (False, None)  # markets: in-process, no request


# -- the market list's TTL ---------------------------------------------------------------


async def test_markets_ttl_doubles_while_unwell() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _sim(clock, ex)
    assert src.markets_ttl_ms() == MARKETS_TTL_MS
    src.degraded = True
    assert src.markets_ttl_ms() == 2 * MARKETS_TTL_MS
    src.degraded = False
    ex.force("503", 10)
    for _ in range(5):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    assert src.circuit.state is OPEN
    assert src.markets_ttl_ms() == 2 * MARKETS_TTL_MS


async def test_a_missing_symbol_reloads_after_the_doubled_ttl_only() -> None:
    """The reload on a miss waits the doubled TTL while degraded: at 1.5x TTL the old list
    answers (no reload), past 2x it reloads."""
    clock = FakeClock(NOW, autoadvance=True)
    src = _sim(clock)
    await src.markets()
    loaded_at = src._markets_at
    src.degraded = True
    clock.set(NOW + MARKETS_TTL_MS * 3 // 2)
    with pytest.raises(SourceError, match="no market"):
        await src.market("NEW/USDT")
    assert src._markets_at == loaded_at  # the list is young enough while degraded
    src.degraded = False
    with pytest.raises(SourceError, match="no market"):
        await src.market("NEW/USDT")
    assert src._markets_at == clock.now_ms()  # reloaded once: older than the plain TTL


async def test_budget_use_and_a_cut_adaptive_budget_degrade() -> None:
    """A source's limiter (here a real adaptive WeightLimiter on the sim source, as CCXT
    and Hyperliquid sources carry one): its use is reported, and a 429's cut below the
    advertised budget makes the provider degraded."""
    from candlekeep.sources.ratelimit import WeightLimiter

    clock = FakeClock(NOW, autoadvance=True)
    src = _sim(clock)
    limiter = WeightLimiter(1200, 60, clock=clock, adaptive=True, name="sim")
    src.limiter = limiter  # type: ignore[attr-defined]
    async with limiter.reserve(300):
        pass
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert (h.budget_used, h.budget, h.budget_advertised) == (300, 1200, 1200)
    assert h.status is ProviderStatus.UP and h.limiter is not None
    assert h.limiter["adaptive"] is True
    limiter.on_rate_limited(None)
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert h.budget is not None and h.budget < 1200 and h.budget_advertised == 1200
    assert h.status is ProviderStatus.DEGRADED
    assert h.reasons == [f"budget cut to {h.budget} of 1200 advertised"]
    assert h.limiter is not None and h.limiter["cuts"] == 1


# -- honesty: redacted reasons, refused probes -------------------------------------------


class _KeyedSim(SimSource):
    """A source holding a secret that its errors echo (the URL with its key, as a keyed
    HTTP source's transport errors can), and whose ``redact`` removes it."""

    SECRET = "sk-live-0123456789"

    async def _request_candles(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._request_candles(*args, **kwargs)
        except TransientSourceError as exc:
            raise TransientSourceError(f"{exc} at /klines?x_cg_pro_api_key={self.SECRET}"
                                       ) from exc

    def redact(self, text: str) -> str:
        return text.replace(self.SECRET, "***")


async def test_reasons_are_redacted_like_last_error() -> None:
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _KeyedSim("sim", exchange=ex, clock=clock, max_attempts=1)
    ex.force("503", 10)
    for _ in range(5):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    assert src.SECRET in (src.circuit.snapshot().last_error or "")  # echoed, unredacted
    h = provider_health(src, "sim", Counters(), clock.now_ms())
    assert h.status is ProviderStatus.DOWN
    assert h.last_error is not None and src.SECRET not in h.last_error
    assert h.reasons and all(src.SECRET not in r for r in h.reasons)
    assert "***" in h.reasons[0]


async def test_a_probe_the_circuit_refuses_is_not_a_probe() -> None:
    """No request went out: not probed (so request counts stay honest), and why."""
    clock = FakeClock(NOW, autoadvance=True)
    ex = SimExchange(7, clock=clock)
    src = _sim(clock, ex)
    ex.force("503", 10)
    for _ in range(5):
        with pytest.raises(SourceError):
            await src.fetch_candles("BTC/USDT", "1m", NOW - 3_600_000, NOW)
    before = src.stats.requests
    probed, error = await probe(src, SeriesKey("sim", "BTC/USDT", "1m"))
    assert src.stats.requests == before
    assert not probed
    assert error is not None and error.startswith("circuit open")
