"""Fallback sources end to end: two simulated exchanges over HTTP, CCXT sources on both.

The primary is made to fail (5xx on every request); the range comes from the fallback and
is stored under the fallback's name, never the primary's; once the primary is back it
fills its own series, and nothing is stored twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import ConfigError
from candlekeep.core.series import SeriesKey
from candlekeep.jobs.runtime import Runtime
from candlekeep.queries.coverage import coverage
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.circuit import CircuitState
from candlekeep.state.reader import reading
from tests.jobs.conftest import NOW, START
from tests.jobs.test_pipeline import run, stored_ts, truth_ts

PRIMARY = SeriesKey("bn", "BTC/USDT", "1h")
ALT = SeriesKey("alt", "BTC/USDT", "1h")
SPARE = SeriesKey("spare", "BTC/USDT", "1h")


def _exchange(seed: int) -> SimExchange:
    return SimExchange(seed, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(NOW), holes=None,
                       transient=None)


@pytest.fixture
def exchanges() -> Iterator[dict[str, tuple[SimExchange, str]]]:
    """Three independent exchanges (different seeds: different prices), each on its own
    loopback server."""
    out: dict[str, tuple[SimExchange, str]] = {}
    servers = []
    for name, seed in (("bn", 7), ("alt", 8), ("spare", 9)):
        ex = _exchange(seed)
        cm = run_in_thread(ex)
        servers.append(cm)
        out[name] = (ex, cm.__enter__())
    yield out
    for cm in servers:
        cm.__exit__(None, None, None)


Make = Callable[..., Runtime]


@pytest.fixture
async def runtime(tmp_path: Path, exchanges: dict[str, tuple[SimExchange, str]]
                  ) -> AsyncIterator[Make]:
    made: list[Runtime] = []

    def make(fallback: list[str], clock: FakeClock | None = None) -> Runtime:
        sources: dict[str, Any] = {
            name: {"type": "ccxt", "exchange": "binance", "base_url": url, "max_attempts": 2,
                   "circuit": {"failures": 2, "cooldown": "30s"}}
            for name, (_, url) in exchanges.items()}
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": sources,
            "series": [{"source": "bn", "symbols": ["BTC/USDT"], "timeframes": ["1h"],
                        "start": START, "fallback": fallback}],
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=clock or FakeClock(NOW, autoadvance=True))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def _closes(rt: Runtime, key: SeriesKey) -> list[float]:
    return pc.cast(rt.store("main").read_candles(key)["close"], pa.float64()).to_pylist()


def _truth_closes(ex: SimExchange, key: SeriesKey) -> list[float]:
    t = ex.expected(key.symbol, key.timeframe, START, NOW, source=key.source)
    return pc.cast(t["close"], pa.float64()).to_pylist()


async def test_a_failing_primary_is_served_by_the_fallback_under_its_own_name(
        runtime: Make, exchanges: dict[str, tuple[SimExchange, str]]) -> None:
    bn, _ = exchanges["bn"]
    alt, _ = exchanges["alt"]
    bn.force("503", 100, endpoint="*")
    clock = FakeClock(NOW, autoadvance=True)
    rt = runtime(["alt"], clock)
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert stored_ts(rt, PRIMARY) == []  # nothing under the primary's name
    assert stored_ts(rt, ALT) == truth_ts(alt, ALT)
    assert _closes(rt, ALT) == _truth_closes(alt, ALT)  # the fallback's own prices
    assert _truth_closes(alt, ALT) != _truth_closes(bn, PRIMARY)
    [fill] = res.details["fallback"]
    assert fill["fallback"] == "alt" and fill["rows"] == len(truth_ts(alt, ALT))
    assert any("fetched from fallback alt" in w for w in res.warnings)

    # Still down, circuit open: the primary is not asked at all, and the fallback serves
    # only what it has not served yet.
    source = rt.source("bn")
    assert source.circuit.state is CircuitState.OPEN
    asked, alt_asked = bn.requests, alt.requests
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert bn.requests == asked
    [said] = res.warnings
    assert "circuit open until" in said and "fallback alt already served" in said
    assert alt.requests == alt_asked  # nothing re-fetched

    # Back up: after the cool-down the primary fills its own series; the fallback's rows
    # stay as they are, under their own name.
    bn.clear_forced()
    await clock.advance(60)
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert "fallback" not in res.details
    assert stored_ts(rt, PRIMARY) == truth_ts(bn, PRIMARY)
    assert _closes(rt, PRIMARY) == _truth_closes(bn, PRIMARY)
    assert stored_ts(rt, ALT) == truth_ts(alt, ALT)
    assert source.circuit.state is CircuitState.CLOSED

    # Coverage shows the fallback's rows next to the primary's, marked.
    from candlekeep.freshness.check import refresh_series_state

    refresh_series_state(rt, clock.now_ms())
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        rows = coverage(reader, rt.plans())
    assert [(r.source, r.fallback_for) for r in rows] == [("bn", None), ("alt", "bn")]
    assert rows[1].stored == len(truth_ts(alt, ALT))
    from candlekeep.queries.encode import plain  # what /coverage and coverage --json send

    assert [r["fallback_for"] for r in plain(rows)] == [None, "bn"]


async def test_fallbacks_are_tried_healthiest_first_and_all_failing_is_an_error(
        runtime: Make, exchanges: dict[str, tuple[SimExchange, str]]) -> None:
    bn, _ = exchanges["bn"]
    alt, _ = exchanges["alt"]
    spare, _ = exchanges["spare"]
    bn.force("503", 100, endpoint="*")
    alt.force("503", 100, endpoint="*")
    clock = FakeClock(NOW, autoadvance=True)
    rt = runtime(["alt", "spare"], clock)
    res = await run(rt, "ingest")
    assert res.ok, res.errors
    assert stored_ts(rt, ALT) == []
    assert stored_ts(rt, SPARE) == truth_ts(spare, SPARE)
    assert rt.source("alt").circuit.state is CircuitState.OPEN

    spare.force("503", 100, endpoint="*")
    await clock.advance(3 * 3600)  # new candles to fetch
    res = await run(rt, "ingest")  # every source down: an error naming each
    assert not res.ok
    assert "no fallback could serve" in res.errors[0]
    assert "alt: circuit open" in res.errors[0]


async def test_without_a_fallback_an_open_circuit_fails_fast(
        runtime: Make, exchanges: dict[str, tuple[SimExchange, str]]) -> None:
    bn, _ = exchanges["bn"]
    bn.force("503", 100, endpoint="*")
    rt = runtime([])
    res = await run(rt, "ingest")
    assert not res.ok
    asked = bn.requests
    res = await run(rt, "ingest")
    assert not res.ok and "circuit open until" in res.errors[0]
    assert bn.requests == asked


@pytest.mark.parametrize(("fallback", "message"), [
    (["nope"], r"series\[0\].fallback\[0\]: unknown source 'nope'"),
    (["bn"], r"series\[0\].fallback\[0\]: 'bn' is the series' own source"),
    (["alt", "alt"], r"series\[0\].fallback\[1\]: 'alt' is listed twice"),
])
def test_bad_fallback_config(tmp_path: Path, fallback: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({
            "stores": {"main": {"type": "duckdb", "path": "c.duckdb"}},
            "sources": {"bn": {"type": "sim"}, "alt": {"type": "sim", "seed": 8}},
            "series": [{"source": "bn", "symbols": ["BTC/USDT"], "timeframes": ["1h"],
                        "fallback": fallback}],
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)


def test_fallbacks_are_ordered_by_health_then_config_order() -> None:
    from candlekeep.core.errors import TransientSourceError
    from candlekeep.jobs.fallback import order_fallbacks
    from candlekeep.sources.circuit import CircuitConfig
    from candlekeep.sources.sim_source import SimSource

    clock = FakeClock(NOW)
    names = ("flaky", "fresh", "steady", "down")
    made = {n: SimSource(n, clock=clock) for n in names}
    made["down"].circuit.config = CircuitConfig(failures=1)
    made["down"].circuit.before().failed(TransientSourceError("503"))
    for _ in range(10):
        made["steady"].circuit.before().succeeded(0.05)
        made["flaky"].circuit.before().succeeded(0.05)
    for _ in range(3):  # 3 of 13 failed: below the trip rules, yet less healthy
        made["flaky"].circuit.before().failed(TransientSourceError("503"))
    ranked = [s.name for s in order_fallbacks([made[n] for n in names])]
    # steady (all answered) > fresh (no calls yet: unknown) > flaky; down is left out.
    assert ranked == ["steady", "fresh", "flaky"]


async def test_a_fallback_fetches_only_what_the_primarys_archive_did_not_store(
        tmp_path: Path) -> None:
    """The archive's files move the primary's checkpoint; when its REST tail then fails,
    the fallback serves the tail only, not the history the archive already stored."""
    from candlekeep.core.timeutil import to_ms
    from candlekeep.sim.archive import ArchiveSpec

    now, start = to_ms("2025-01-03T12:00:30Z"), to_ms("2024-12-01")
    key, alt_key = SeriesKey("bn", "BTC/USDT", "15m"), SeriesKey("alt", "BTC/USDT", "15m")
    bn = SimExchange(7, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(now), transient=None)
    alt = SimExchange(8, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(now), transient=None)
    with run_in_thread(bn, archive=ArchiveSpec(faults=())) as bn_url, \
            run_in_thread(alt) as alt_url:
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": {
                "bn": {"type": "ccxt", "exchange": "binance", "base_url": bn_url,
                       "max_attempts": 2, "bulk": {"base_url": bn_url, "concurrency": 2}},
                "alt": {"type": "ccxt", "exchange": "binance", "base_url": alt_url,
                        "max_attempts": 2}},
            "series": [{"source": "bn", "symbols": ["BTC/USDT"], "timeframes": ["15m"],
                        "start": start, "fallback": ["alt"]}],
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=FakeClock(now, autoadvance=True))
        try:
            rt.state.set_checkpoint("backfill", key, start + 900_000, now)  # no listing probe
            bn.force("503", 1000, endpoint="klines")  # REST down, the archive is fine
            res = await run(rt, "backfill")
            assert res.ok, res.errors
            primary, fallback = stored_ts(rt, key), stored_ts(rt, alt_key)
            day = to_ms("2025-01-03")
            assert primary[0] == start + 900_000 and primary[-1] < day  # the archive's days
            assert fallback == [t for t in truth_ts(alt, alt_key, day, now) if t >= day]
            assert not set(primary) & set(fallback)
            [fill] = res.details["fallback"]
            assert fill["start"] == "2025-01-03T00:00:00.000Z"
        finally:
            await rt.aclose()


async def test_restart_forgets_what_fallbacks_served(
        runtime: Make, exchanges: dict[str, tuple[SimExchange, str]]) -> None:
    bn, _ = exchanges["bn"]
    alt, _ = exchanges["alt"]
    bn.force("503", 100, endpoint="*")
    rt = runtime(["alt"])
    assert (await run(rt, "backfill")).ok
    asked = alt.requests
    res = await run(rt, "backfill", restart=True)  # primary still down: alt serves it all
    assert res.ok, res.errors
    assert alt.requests > asked
    [fill] = res.details["fallback"]
    assert fill["rows"] == len(truth_ts(alt, ALT))
