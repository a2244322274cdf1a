"""Backfill → ingest → gap scan → repair on the in-process sim, checked against its truth."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.cli.data_cmds import current_coverage
from candlekeep.core.clock import FakeClock
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import parse_timeframe
from candlekeep.jobs.base import JobResult
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import adhoc_spec, run_adhoc
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.sim.exchange import Hole, SimExchange, TransientSpec
from tests.jobs.conftest import DAY, NOW, START, RuntimeFactory

H = 3_600_000
M = 60_000


async def run(rt: Runtime, job: str, **params: Any) -> JobResult:
    """One attempt of a job type, as the run path makes it (these tests are about the jobs;
    the run path itself, with its heartbeats, is tested under tests/scheduler)."""
    attempt = await execute_attempt(rt, adhoc_spec(job, build_params(job, params)),
                                    asyncio.Event())
    res = attempt.result if attempt.result is not None else JobResult()
    if attempt.error and not res.errors:
        res.errors.append(attempt.error)
    return res


def stored_ts(rt: Runtime, key: SeriesKey) -> list[int]:
    t = rt.store("main").read_candles(key)
    return pc.cast(t["ts"], pa.int64()).to_pylist()


def truth_ts(ex: SimExchange, key: SeriesKey, start: int = START, end: int = NOW) -> list[int]:
    t = ex.expected(key.symbol, key.timeframe, start, end, source=key.source)
    return pc.cast(t["ts"], pa.int64()).to_pylist()


def exchange(**kw: Any) -> SimExchange:
    kw.setdefault("holes", None)
    kw.setdefault("transient", None)
    return SimExchange(7, {"BTC/USDT": "2017-08-17", "ETH/USDT": "2017-08-17"},
                       clock=FakeClock(NOW), **kw)


async def test_full_pipeline_repairs_late_data_and_confirms_holes(
    make_runtime: RuntimeFactory,
) -> None:
    hole = Hole(START + 5 * H, START + 5 * H + 30 * M)  # maintenance: 30 one-minute candles
    ex = exchange(extra_holes=[hole], transient=TransientSpec(period_ms=6 * H, probability=1.0))
    rt = make_runtime(ex, ["BTC/USDT", "ETH/USDT"], ["1m", "1h"])
    res = await run(rt, "backfill")
    assert res.ok and res.rows_written > 0
    key = SeriesKey("sim", "BTC/USDT", "1m")
    truth = truth_ts(ex, key)
    first = stored_ts(rt, key)
    assert set(first) < set(truth), "late data must be missing after the first fetch"

    scan = await run(rt, "gaps_scan")
    assert scan.details["gaps"] >= 2
    await run(rt, "gaps_repair")
    after_one = rt.state.list_gaps()
    assert all(g.status in ("repaired", "open") for g in after_one)
    await run(rt, "gaps_repair")

    for sym in ("BTC/USDT", "ETH/USDT"):
        for tf in ("1m", "1h"):
            k = SeriesKey("sim", sym, tf)
            got = stored_ts(rt, k)
            want = [t for t in truth_ts(ex, k) if got[0] <= t <= got[-1]]
            assert got == want, k
    statuses = {(g.series, g.gap_start, g.gap_end): g.status for g in rt.state.list_gaps()}
    assert statuses[(key, hole.start_ms, hole.end_ms - M)] == "confirmed_empty"
    assert {s for s in statuses.values()} == {"repaired", "confirmed_empty"}
    cov = {c.series: c for c in current_coverage(rt)[0]}
    assert cov[str(key)].missing == 30 and cov[str(key)].confirmed_empty == 30
    assert all(c.stored_exact for c in cov.values())
    assert all(c.coverage_pct == 100.0 for c in cov.values())
    # Values match the exchange's exactly, not just the timestamps.
    t = rt.store("main").read_candles(key)
    want_t = ex.expected(key.symbol, key.timeframe, START, NOW, source="sim")
    assert t.select(["ts", "open", "high", "low", "close", "volume"]).equals(
        want_t.select(["ts", "open", "high", "low", "close", "volume"]))


async def test_rerun_fetches_only_new_and_ingest_follows_time(
    make_runtime: RuntimeFactory, clock: FakeClock
) -> None:
    ex = exchange()
    rt = make_runtime(ex, ["BTC/USDT"], ["1m", "5m"])
    first = await run(rt, "backfill")
    again = await run(rt, "backfill")
    closed_1m = 2 * DAY // M + 13 * 60 + 17
    closed_5m = (2 * DAY + 13 * H + 15 * M) // (5 * M)
    assert first.rows_written == closed_1m + closed_5m
    assert again.rows_written == 0 and again.requests == 0
    clock.set(NOW + 10 * M)
    ex.clock = clock  # the exchange's time moves with ours
    ing = await run(rt, "ingest")
    assert ing.rows_written == 10 + 2  # ten 1m candles, two 5m candles closed meanwhile
    key = SeriesKey("sim", "BTC/USDT", "1m")
    assert stored_ts(rt, key) == truth_ts(ex, key, end=NOW + 10 * M)


async def test_listing_inside_range_is_not_a_gap(make_runtime: RuntimeFactory) -> None:
    listing = START + DAY + 7 * H + 13 * M
    ex = SimExchange(7, {"NEW/USDT": listing}, clock=FakeClock(NOW), holes=None, transient=None)
    rt = make_runtime(ex, ["NEW/USDT"], ["1m", "1h"])
    await run(rt, "backfill")
    key = SeriesKey("sim", "NEW/USDT", "1m")
    ts = stored_ts(rt, key)
    assert ts[0] == listing
    await run(rt, "gaps_scan")
    assert rt.state.list_gaps() == []
    span = rt.store("main").span(SeriesKey("sim", "NEW/USDT", "1h"))
    assert span is not None and span.first_ms == parse_timeframe("1h").floor(listing)


async def test_bad_reply_stores_nothing_and_keeps_checkpoint(
    make_runtime: RuntimeFactory,
) -> None:
    ex = exchange()
    start = START - 8 * DAY  # ~15 pages: the probe, a chunk of 8 pages, then the bad one
    rt = make_runtime(ex, ["BTC/USDT"], ["1m"], start=start)
    key = SeriesKey("sim", "BTC/USDT", "1m")
    # Listing probe + one full chunk of 8 pages succeed; the next page is corrupt.
    pages_ok = 1 + 8
    for _ in range(pages_ok):
        ex.force("slow", delay_s=0.0)
    ex.force("high_low")
    res = await run(rt, "backfill")
    assert not res.ok and "high below" in res.errors[0]
    ts = stored_ts(rt, key)
    checkpoint = rt.state.get_checkpoint("backfill", key)
    assert checkpoint == ts[-1] + M == start + 8 * 1000 * M
    assert len(ts) == 8000 and ts == truth_ts(ex, key, start)[:8000]
    # The rerun resumes at the checkpoint and completes the series.
    res = await run(rt, "backfill")
    assert res.ok
    assert stored_ts(rt, key) == truth_ts(ex, key, start)


async def test_dry_run_plans_and_writes_nothing(make_runtime: RuntimeFactory) -> None:
    ex = exchange()
    rt = make_runtime(ex, ["BTC/USDT", "ETH/USDT"], ["1m"])
    res = await run_adhoc(rt, "backfill", build_params("backfill", {}), dry_run=True)
    assert len(res.details["plan"]) == 2
    assert all("3677 candles" in line and "~4 requests" in line for line in res.details["plan"])
    assert rt.store("main").spans() == []
    assert rt.state.list_runs() == []


async def test_backfill_stops_at_the_exchange_history_horizon(
    make_runtime: RuntimeFactory,
) -> None:
    """An exchange serving only its newest N candles (Hyperliquid 5,000, Kraken 720): the
    backfill says so once, starts there instead of probing further back, and coverage
    names the horizon as where history starts."""
    import dataclasses

    from candlekeep.queries.coverage import coverage
    from candlekeep.state.reader import reading

    ex = exchange()
    rt = make_runtime(ex, ["BTC/USDT"], ["1h"], start=START - 30 * DAY)
    src = rt.source("sim")
    src.caps = dataclasses.replace(src.caps, history_limit=24)
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    (warning,) = res.warnings
    assert "serves only its newest 24 1h candles" in warning
    assert "starts at the exchange's horizon" in warning
    key = SeriesKey("sim", "BTC/USDT", "1h")
    got = stored_ts(rt, key)
    horizon = parse_timeframe("1h").floor(rt.clock.now_ms()) - 23 * H
    assert got[0] >= horizon and len(got) <= 24
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        (row,) = coverage(reader, rt.plans())
    assert row.note is not None and row.note.startswith("history starts at the exchange horizon")
    again = await run(rt, "backfill")
    assert again.ok and not again.warnings, "said once: the checkpoint is past the horizon"


async def test_gaps_beyond_the_history_horizon_are_never_confirmed_empty(
    make_runtime: RuntimeFactory,
) -> None:
    """A hole the exchange can no longer serve (older than its horizon) is not evidence of
    an exchange-side hole: repair reports it as beyond the horizon, never confirmed empty."""
    import dataclasses

    hole = Hole(START + 5 * H, START + 5 * H + 30 * M)
    ex = exchange(extra_holes=[hole])
    rt = make_runtime(ex, ["BTC/USDT"], ["1m"])
    assert (await run(rt, "backfill")).ok
    assert (await run(rt, "gaps_scan")).details["gaps"] >= 1
    src = rt.source("sim")
    src.caps = dataclasses.replace(src.caps, history_limit=60)  # the last hour only
    for _ in range(3):
        res = await run(rt, "gaps_repair")
        assert res.details.get("beyond_horizon", 0) >= 1
        assert res.details.get("confirmed_empty", 0) == 0
    gaps = [g for g in rt.state.list_gaps() if g.gap_start <= hole.start_ms <= g.gap_end]
    assert gaps and all(g.status != "confirmed_empty" for g in gaps)
    assert "history horizon" in (gaps[0].last_error or "")


async def test_repair_while_the_circuit_is_open_defers_without_using_attempts(
    make_runtime: RuntimeFactory,
) -> None:
    from candlekeep.core.errors import TransientSourceError
    from candlekeep.sources.circuit import CircuitState

    ex = exchange(transient=TransientSpec(period_ms=6 * H, probability=1.0))
    rt = make_runtime(ex, ["BTC/USDT"], ["1h"])
    assert (await run(rt, "backfill")).ok
    assert (await run(rt, "gaps_scan")).details["gaps"] >= 1
    breaker = rt.source("sim").circuit
    for _ in range(breaker.config.failures):  # the provider went down
        breaker.before().failed(TransientSourceError("503"))
    assert breaker.state is CircuitState.OPEN
    for _ in range(6):  # more runs than FAIL_AFTER_ERRORS
        res = await run(rt, "gaps_repair")
        assert res.details["deferred"] >= 1 and "errors" not in res.details
    gaps = rt.state.list_gaps()
    assert gaps and all(g.status == "open" and g.attempts == 0 for g in gaps)
