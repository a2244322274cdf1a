"""Freshness: thresholds that know the cadence, the check on real stores, recorded verdicts
and transitions, and the ingestion status the API serves, all from one rule set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from candlekeep.config import parse_config
from candlekeep.config.ops import FreshnessConfig
from candlekeep.core.clock import FakeClock
from candlekeep.core.datasets import Dataset
from candlekeep.core.series import SeriesKey
from candlekeep.freshness.rules import FreshnessRules, Threshold, assess, in_quiet_hours
from candlekeep.jobs.base import JobResult
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.queries.freshness import freshness, ingestion_status
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.sim.exchange import SimExchange
from candlekeep.sources.sim_source import SimSource
from candlekeep.state.reader import reading
from candlekeep.state.statuses import FreshnessStatus
from tests.jobs.conftest import make_config

M = 60_000
H = 60 * M
DAY = 24 * H
NOW = 1_767_225_600_000 + 13 * H + 17 * M + 12_345  # 2026-01-01 13:17:12.345
START = NOW // DAY * DAY - DAY
BTC_1M = SeriesKey("sim", "BTC/USDT", "1m")
BTC_1H = SeriesKey("sim", "BTC/USDT", "1h")
ETH_1M = SeriesKey("sim", "ETH/USDT", "1m")

FILLS = Dataset("fills", pa.schema([pa.field("id", pa.string(), nullable=False),
                                    pa.field("time", pa.timestamp("ms", tz="UTC")),
                                    pa.field("qty", pa.float64())]),
                key=("id",), time="time")


# -- rules -------------------------------------------------------------------------------


def test_default_threshold_is_a_few_timeframes_plus_grace() -> None:
    rules = FreshnessRules(FreshnessConfig())
    assert rules.series(BTC_1M).max_age_ms == 3 * M + 300_000
    assert rules.series(BTC_1H).max_age_ms == 3 * H + 300_000
    assert rules.series(BTC_1M).step_ms == M


def test_series_rules_override_in_order() -> None:
    cfg = FreshnessConfig.model_validate({
        "candles": 2, "grace": "1m",
        "series": [{"timeframe": "1h", "candles": 5},
                   {"symbol": "BTC/USDT", "timeframe": "1h", "max_age": "30m",
                    "quiet_hours": ["22:00-06:00"]}]})
    rules = FreshnessRules(cfg)
    assert rules.series(BTC_1M).max_age_ms == 2 * M + M
    assert rules.series(SeriesKey("sim", "ETH/USDT", "1h")).max_age_ms == 5 * H + M
    btc = rules.series(BTC_1H)
    assert btc.max_age_ms == 30 * M and btc.quiet_hours == ("22:00-06:00",)


def test_age_counts_from_the_close_of_the_newest_candle() -> None:
    t = Threshold(20 * M, step_ms=H)
    open_ = NOW // H * H - H  # the last closed hourly candle
    a = assess(open_, t, NOW)
    assert a.status is FreshnessStatus.OK and a.age_ms == NOW - (open_ + H)
    late = assess(open_ - H, t, NOW)
    assert late.status is FreshnessStatus.STALE and late.age_ms == NOW - open_
    assert "allowed 20m00s" in (late.detail or "")
    assert assess(None, t, NOW).status is FreshnessStatus.MISSING


def test_quiet_hours_wrap_midnight_and_turn_stale_into_ok() -> None:
    midnight = NOW // DAY * DAY
    assert in_quiet_hours(["22:00-06:00"], midnight + 23 * H)
    assert in_quiet_hours(["22:00-06:00"], midnight + 5 * H + 59 * M)
    assert not in_quiet_hours(["22:00-06:00"], midnight + 6 * H)
    assert in_quiet_hours(["09:00-10:00", "13:00-14:00"], midnight + 13 * H + 30 * M)
    t = Threshold(H, ("13:00-14:00",))
    quiet = assess(NOW - 5 * H, t, NOW)  # NOW is 13:17 UTC
    assert quiet.status is FreshnessStatus.OK and "quiet hours" in (quiet.detail or "")
    assert assess(NOW - 5 * H, Threshold(H), NOW).status is FreshnessStatus.STALE


def test_the_allowance_restarts_when_quiet_hours_end() -> None:
    midnight = NOW // DAY * DAY
    t = Threshold(H, ("22:00-06:00",))
    idle_since = midnight - 2 * H - M  # 21:59 yesterday, just before the quiet hours
    just_after = assess(idle_since, t, midnight + 6 * H + 30 * M)
    assert just_after.status is FreshnessStatus.OK
    assert "quiet hours ended 30m00s ago" in (just_after.detail or "")
    later = assess(idle_since, t, midnight + 7 * H + M)
    assert later.status is FreshnessStatus.STALE


def test_a_dataset_watched_twice_is_a_config_error() -> None:
    from candlekeep.core.errors import ConfigError

    fills = {"store": "main", "dataset": "fills", "max_age": "1h"}
    with pytest.raises(ConfigError) as err:
        parse_config({"stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
                      "freshness": {"datasets": [fills, {**fills, "max_age": "2h"}]}},
                     "cfg.yaml", Path("."))
    assert "freshness.datasets[1]" in str(err.value) and "twice" in str(err.value)


def test_quiet_hours_are_validated_with_the_fix_named() -> None:
    from candlekeep.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"freshness": {"datasets": [{"store": "x", "dataset": "fills",
                                                  "max_age": "1h",
                                                  "quiet_hours": ["25:00-06:00"]}]}},
                     "cfg.yaml", Path("."))
    text = str(err.value)
    assert "freshness.datasets[0].quiet_hours[0]" in text and "HH:MM-HH:MM" in text


# -- the check on real stores -------------------------------------------------------------


Factory = Callable[..., Runtime]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[Runtime] = []

    def factory(clock: FakeClock, **extra: Any) -> Runtime:
        series = extra.pop("series", [{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"],
                                       "timeframes": ["1m", "1h"], "start": START}])
        cfg = make_config(tmp_path, series, **extra)
        ex = SimExchange(7, {"BTC/USDT": "2017-08-17", "ETH/USDT": "2017-08-17"},
                         clock=clock, holes=None, transient=None)
        rt = Runtime(cfg, clock=clock, sources={"sim": SimSource("sim", exchange=ex,
                                                                 clock=clock)})
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        await rt.aclose()


async def run(rt: Runtime, job: str, **params: Any) -> JobResult:
    attempt = await execute_attempt(rt, adhoc_spec(job, build_params(job, params)),
                                    asyncio.Event())
    assert attempt.result is not None, attempt.error
    return attempt.result


def verdicts(rt: Runtime) -> dict[str, Any]:
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        return {f"{v.store}/{v.subject}": v for v in freshness(reader)}


async def test_the_write_path_keeps_series_state_without_a_scan(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    rt = make_runtime(clock)
    await run(rt, "backfill", symbol="BTC/USDT")
    spans = {s.series: s for s in rt.store("main").spans()}
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        state = {r.series: r for r in reader.series_state("main")}
        status = {v.series: v for v in ingestion_status(reader, rt.config, NOW)}
        only = ingestion_status(reader, rt.config, NOW, symbol="ETH/USDT", timeframe="1h")
    for key in (BTC_1M, BTC_1H):
        assert state[key].last_ms == spans[key].last_ms
        assert state[key].first_ms == spans[key].first_ms
        assert state[key].rows >= spans[key].count
        assert state[key].scanned_at is None  # known from the writes alone
        assert status[key].status is FreshnessStatus.OK
        assert status[key].newest_ms == spans[key].last_ms
        assert status[key].newest_utc is not None and status[key].newest_utc.endswith("Z")
    assert status[ETH_1M].status is FreshnessStatus.MISSING and status[ETH_1M].rows_estimate == 0
    assert [v.series for v in only] == [SeriesKey("sim", "ETH/USDT", "1h")]


async def test_check_judges_records_and_reports_transitions(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    rt = make_runtime(clock)
    await run(rt, "backfill", symbol="BTC/USDT")
    first = await run(rt, "freshness")
    assert first.ok
    assert first.details["ok"] == 2 and first.details["missing"] == 2
    assert any("missing: main/sim:ETH/USDT:1m" in w for w in first.warnings)
    seen = verdicts(rt)
    assert seen["main/sim:BTC/USDT:1m"].status is FreshnessStatus.OK
    assert seen["main/sim:ETH/USDT:1h"].status is FreshnessStatus.MISSING
    assert seen["main/sim:BTC/USDT:1m"].status_since == NOW
    # the scan reconciled the state: counts are exact now
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        state = {r.series: r for r in reader.series_state("main")}
    spans = {s.series: s for s in rt.store("main").spans()}
    assert state[BTC_1M].rows == spans[BTC_1M].count and state[BTC_1M].scanned_at == NOW

    clock.set(NOW + 2 * H)  # 1m: far past 3 candles + 5 min; 1h: within 3h05m
    second = await run(rt, "freshness")
    moved = {(t["subject"], t["from"], t["to"]) for t in second.details["transitions"]}
    assert moved == {("sim:BTC/USDT:1m", "ok", "stale")}
    seen = verdicts(rt)
    stale = seen["main/sim:BTC/USDT:1m"]
    assert stale.status is FreshnessStatus.STALE and stale.status_since == NOW + 2 * H
    assert stale.age_ms is not None and stale.age_ms > stale.threshold_ms
    assert seen["main/sim:BTC/USDT:1h"].status is FreshnessStatus.OK
    assert seen["main/sim:BTC/USDT:1h"].status_since == NOW  # unchanged status keeps it

    await run(rt, "ingest", symbol="BTC/USDT")  # catch up: back to ok
    third = await run(rt, "freshness")
    assert ("sim:BTC/USDT:1m", "stale", "ok") in {
        (t["subject"], t["from"], t["to"]) for t in third.details["transitions"]}

    gate = await run(rt, "freshness", fail_when_stale=True)
    assert not gate.ok and any("ETH/USDT" in e for e in gate.errors)


async def test_unreadable_store_is_an_error_verdict(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    rt = make_runtime(clock, stores={
        "main": {"type": "duckdb", "path": "data/candles.duckdb"},
        "remote": {"type": "postgresql", "dsn": "postgresql://postgres@127.0.0.1:9/nothing"}},
        series=[{"source": "sim", "symbols": ["BTC/USDT"], "timeframes": ["1h"],
                 "start": START},
                {"source": "sim", "symbols": ["ETH/USDT"], "timeframes": ["1h"],
                 "start": START, "store": "remote"}])
    await run(rt, "backfill", symbol="BTC/USDT")
    res = await run(rt, "freshness")
    assert res.ok and res.details["error"] == 1 and res.details["ok"] == 1
    bad = verdicts(rt)["remote/sim:ETH/USDT:1h"]
    assert bad.status is FreshnessStatus.ERROR and "remote" in (bad.detail or "")
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        live = {v.series: v for v in ingestion_status(reader, rt.config, NOW)}
    # the API says what the check found, not a guess from the write path
    assert live[SeriesKey("sim", "ETH/USDT", "1h")].status is FreshnessStatus.ERROR
    assert live[BTC_1H].status is FreshnessStatus.OK


async def test_a_truncated_store_shows_as_missing(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    rt = make_runtime(clock)
    await run(rt, "backfill", symbol="BTC/USDT", timeframe="1h")
    assert (await run(rt, "freshness")).details["ok"] == 1
    import duckdb

    rt.store("main").close()
    with duckdb.connect(str(rt.config.data_dir / "candles.duckdb")) as con:
        con.execute("DELETE FROM candles")  # restored from an old backup, say
    res = await run(rt, "freshness")
    assert res.details["ok"] == 0 and res.details["missing"] == 4
    with reading(rt.config.state_url, rt.config.data_dir) as reader:
        assert reader.series_state("main") == []


async def test_two_checks_at_once_both_succeed(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    rt = make_runtime(clock)
    await run(rt, "backfill", symbol="BTC/USDT", timeframe="1h")
    from candlekeep.freshness.check import run_check

    for _ in range(5):  # new subjects each round: both checks insert them
        from candlekeep.state.ops_tables import freshness as table

        with rt.state.engine.begin() as conn:
            conn.execute(table.delete())
        results = await asyncio.gather(*(asyncio.to_thread(run_check, rt, NOW)
                                          for _ in range(2)))
        assert all(len(r.verdicts) == 4 for r in results)
        assert verdicts(rt)["main/sim:BTC/USDT:1h"].status_since == NOW


async def test_watched_datasets_missing_stale_and_quiet(make_runtime: Factory) -> None:
    clock = FakeClock(NOW)
    watch = {"datasets": [
        {"store": "main", "dataset": "fills", "max_age": "1h"},
        {"store": "main", "dataset": "orders", "max_age": "1h"}]}
    rt = make_runtime(clock, series=[], freshness=watch)
    await run(rt, "freshness")
    seen = verdicts(rt)
    assert seen["main/fills"].status is FreshnessStatus.MISSING
    assert seen["main/fills"].kind == "dataset"
    at = pa.array([NOW - 10 * M], pa.timestamp("ms", tz="UTC"))
    rt.store("main").upsert(FILLS, pa.table({"id": ["f1"], "time": at, "qty": [1.0]},
                                            schema=FILLS.schema))
    await run(rt, "freshness")
    fills = verdicts(rt)["main/fills"]
    assert fills.status is FreshnessStatus.OK and fills.newest_ms == NOW - 10 * M
    assert fills.age_ms == 10 * M

    clock.set(NOW + 3 * H)
    await run(rt, "freshness")
    assert verdicts(rt)["main/fills"].status is FreshnessStatus.STALE

    quiet = {"datasets": [{"store": "main", "dataset": "fills", "max_age": "1h",
                           "quiet_hours": ["16:00-17:00"]}]}  # NOW + 3h is 16:17 UTC
    rt2 = make_runtime(clock, series=[], freshness=quiet)
    await run(rt2, "freshness")
    after = verdicts(rt2)
    assert after["main/fills"].status is FreshnessStatus.OK
    assert "quiet hours" in (after["main/fills"].detail or "")
    assert "main/orders" not in after  # no longer watched: its verdict is dropped
