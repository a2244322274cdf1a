"""The coingecko_prices and coingecko_quality jobs against the sim's CoinGecko over HTTP:
what comes back is stored under the width it has (5m, 1h, 1d, never 1m), 24 h volumes in
``volume_24h``, UTC slot times, OHLC at open times, reruns resume from checkpoints, refused
keys and ambiguous symbols are clear errors, the quality job catches a hole; DuckDB and
PostgreSQL; and the config checks that need no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import ConfigError
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import fmt_ms, to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.validate import load_jobs
from candlekeep.sim.coingecko.app import CoinGeckoSim
from candlekeep.sim.coingecko.spec import CoinGeckoSpec, KeySpec
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.coingecko.datasets import COINGECKO_OHLC, COINGECKO_PRICES
from candlekeep.sources.coingecko.pull import CHECKPOINT_JOB, checkpoint_key
from tests.jobs.test_pipeline import run
from tests.pg import pg_url  # noqa: F401  (fixture)
from tests.waiting import until

NOW = to_ms("2025-01-15T12:07:13.250Z")
KEY = "CG-demo-key-s3cret"
SHARED_KEY = "CG-demo-key-shared"
"""Advertises the demo plan's 30 calls a minute; the sim lets through 8 (shared with
another program)."""
EXAMPLE = Path(__file__).parents[2] / "examples" / "coingecko.yaml"


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """Sleeps move it at once unless a test asks for a clock it moves by hand."""
    return FakeClock(NOW, autoadvance=getattr(request, "param", True))


@pytest.fixture
def sim(clock: FakeClock) -> CoinGeckoSim:
    return CoinGeckoSim(SimExchange(7, clock=clock, holes=None, transient=None),
                        CoinGeckoSpec(keys=(KeySpec(KEY, "demo"),
                                            KeySpec(SHARED_KEY, "demo", enforced_per_minute=8))))


@pytest.fixture
def url(sim: CoinGeckoSim) -> Iterator[str]:
    with run_in_thread(sim.exchange, coingecko=sim) as base:
        yield base


Factory = Callable[..., Runtime]


@pytest.fixture
async def runtime(tmp_path: Path, url: str, clock: FakeClock) -> AsyncIterator[Factory]:
    made: list[Runtime] = []

    def make(key: str = KEY, store: dict[str, Any] | None = None,
             rt_clock: FakeClock | None = None, **source: Any) -> Runtime:
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": store or {"type": "duckdb", "path": "data/cg.duckdb"}},
            "sources": {"cg": {"type": "coingecko", "plan": "demo", "api_key": key,
                               "base_url": CoinGeckoSim.base_url(url, "demo"),
                               "max_attempts": 2, **source}},
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=rt_clock or clock)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def prices(rt: Runtime, coin: str = "bitcoin") -> pa.Table:
    return rt.store("main").read(COINGECKO_PRICES, where={"coin_id": coin}, column="ts")


def ints(col: pa.ChunkedArray) -> list[int]:
    return pc.cast(col, pa.int64()).to_pylist()


async def test_hourly_backfill_stores_hourly_points_with_24h_volume(
        runtime: Factory, sim: CoinGeckoSim) -> None:
    rt = runtime()
    res = await run(rt, "coingecko_prices", source="cg", coins=["btc", "sol"], timeframe="1h",
                    lookback="2d")
    assert res.ok, res.errors
    assert not res.warnings
    end = NOW // HOUR_MS * HOUR_MS
    for coin in ("bitcoin", "solana"):
        got = prices(rt, coin)
        ts = ints(got["ts"])
        assert ts == list(range(end - 48 * HOUR_MS, end, HOUR_MS))  # UTC slots, closed only
        assert set(got["timeframe"].to_pylist()) == {"1h"}
        assert got.schema.field("ts").type.tz == "UTC"
        assert "volume" not in got.column_names
        # The truth: the point of each slot, its rolling 24 h volume in volume_24h.
        truth = sim.chart(coin, (end - 49 * HOUR_MS) / 1000, end / 1000, "1h")
        by_slot = {int(t) // HOUR_MS * HOUR_MS: i for i, t in enumerate(truth.ts)}
        assert got["price"].to_pylist() == [truth.prices[by_slot[t]] for t in ts]
        assert got["volume_24h"].to_pylist() == [truth.total_volumes[by_slot[t]] for t in ts]
        assert got["market_cap"].to_pylist() == [truth.market_caps[by_slot[t]] for t in ts]
        assert rt.state.get_checkpoint(CHECKPOINT_JOB, checkpoint_key(
            "cg", coin, "main", "1h", "market_chart")) == end
    assert res.rows_written == 96 and res.requests == 3  # coin list + one range per coin

    # A rerun asks for nothing and writes nothing.
    again = await run(rt, "coingecko_prices", source="cg", coins=["btc", "sol"],
                      timeframe="1h", lookback="2d")
    assert again.ok and again.rows_written == 0 and again.requests == 0
    assert prices(rt).num_rows == 48


async def test_a_lagging_reply_leaves_the_checkpoint_at_what_came_back(
        runtime: Factory, sim: CoinGeckoSim) -> None:
    rt = runtime()
    end = NOW // HOUR_MS * HOUR_MS
    key = checkpoint_key("cg", "bitcoin", "main", "1h", "market_chart")
    # The range asked ends at 12:00, its reply with the 11:00 point; a lagging one lacks it.
    sim.force("lag", endpoint="market_chart_range", points=1)
    res = await run(rt, "coingecko_prices", source="cg", coins=["btc"], timeframe="1h",
                    lookback="2d")
    assert res.ok, res.errors
    assert ints(prices(rt)["ts"])[-1] == end - 2 * HOUR_MS
    assert rt.state.get_checkpoint(CHECKPOINT_JOB, key) == end - HOUR_MS
    again = await run(rt, "coingecko_prices", source="cg", coins=["btc"], timeframe="1h",
                      lookback="2d")
    assert again.ok and again.rows_written >= 1
    assert ints(prices(rt)["ts"]) == list(range(end - 48 * HOUR_MS, end, HOUR_MS))  # no hole
    assert rt.state.get_checkpoint(CHECKPOINT_JOB, key) == end


async def test_five_minute_points_exist_for_the_last_day_only(runtime: Factory) -> None:
    rt = runtime()
    res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"], timeframe="5m",
                    lookback="2d")
    assert res.ok, res.errors
    assert any("last 24 h" in w for w in res.warnings)
    got = prices(rt)
    assert set(got["timeframe"].to_pylist()) == {"5m"}
    ts = ints(got["ts"])
    assert all(t % (5 * MINUTE_MS) == 0 for t in ts)
    assert ts[-1] == NOW // (5 * MINUTE_MS) * (5 * MINUTE_MS) - 5 * MINUTE_MS
    assert len(ts) == len(set(ts)) >= 286  # a day of 5-minute slots, less the edges


@pytest.mark.parametrize("clock", [False], indirect=True)
async def test_five_minute_requests_waiting_in_the_limiter_still_come_back_5_minutely(
        runtime: Factory, clock: FakeClock) -> None:
    # One call a minute: the coin list goes now, the coins one, two and three minutes
    # later; their ranges must still start within the last 24 h when they are sent.
    rt = runtime(calls_per_minute=1)  # the clock moves by hand, never under a request
    coins = ["bitcoin", "solana", "ethereum"]
    job = asyncio.create_task(run(rt, "coingecko_prices", source="cg", coins=coins,
                                  timeframe="5m", lookback="2d"))
    limiter = rt.source("cg").limiter  # type: ignore[attr-defined]
    while True:
        await until(lambda: job.done() or (clock.sleepers and not limiter.in_flight_weight),
                    "a limiter wait or the end")
        if job.done():
            break
        await clock.run_until(clock.next_wakeup_ms())
    res = job.result()
    assert res.ok, res.errors
    assert clock.now_ms() - NOW >= 3 * 60_000  # the last coin waited three minutes
    assert not [w for w in res.warnings if "returned" in w], res.warnings
    for coin in coins:
        got = prices(rt, coin)
        assert set(got["timeframe"].to_pylist()) == {"5m"} and got.num_rows >= 280


@pytest.mark.parametrize("calls_per_minute", [None, 30])
async def test_a_budget_smaller_than_advertised_is_learnt_unless_one_is_configured(
        runtime: Factory, sim: CoinGeckoSim, calls_per_minute: int | None) -> None:
    rt = runtime(key=SHARED_KEY, max_attempts=5, **(
        {"calls_per_minute": calls_per_minute} if calls_per_minute else {}))
    coins = ["bitcoin", "solana", "ethereum", "ethereum-wormhole"]
    res = await run(rt, "coingecko_prices", source="cg", coins=coins, timeframe="1h",
                    lookback="360d")
    snap = rt.source("cg").limiter.snapshot()  # type: ignore[attr-defined]
    assert res.ok, res.errors
    assert res.rows_written == 4 * 360 * 24  # five 89-day chunks per coin, all stored
    assert snap.advertised_budget == 30
    if calls_per_minute is None:  # learnt: cut from the advertised 30 to the 8 let through
        assert snap.adaptive and snap.cuts >= 1 and snap.effective_budget <= 8
        assert sim.rejected_429 <= 2
    else:  # configured: fixed, whatever the 429s say
        assert not snap.adaptive and snap.cuts == 0 and snap.effective_budget == 30


async def test_daily_points_are_daily(runtime: Factory) -> None:
    rt = runtime()
    res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"], timeframe="1d",
                    lookback="10d")
    assert res.ok, res.errors
    got = prices(rt)
    assert set(got["timeframe"].to_pylist()) == {"1d"}
    today = NOW // DAY_MS * DAY_MS
    assert ints(got["ts"]) == list(range(today - 10 * DAY_MS, today, DAY_MS))


async def test_ohlc_candles_are_stored_at_their_open_time(runtime: Factory,
                                                          sim: CoinGeckoSim) -> None:
    rt = runtime()
    res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"], timeframe="4h",
                    lookback="5d")
    assert res.ok, res.errors
    got = rt.store("main").read(COINGECKO_OHLC, column="ts")
    truth = sim.ohlc("bitcoin", 5)
    assert truth.candle_ms == 4 * HOUR_MS
    start = (NOW - 5 * DAY_MS) // (4 * HOUR_MS) * (4 * HOUR_MS)  # every 4 h the 5 days touch
    want = [int(c) - 4 * HOUR_MS for c in truth.close_ts if c - 4 * HOUR_MS >= start]
    assert ints(got["ts"]) == want
    assert got["close"].to_pylist() == truth.close.tolist()[-len(want):]
    assert set(got["timeframe"].to_pylist()) == {"4h"}


async def test_what_came_back_is_stored_under_its_own_width_never_relabelled(
        runtime: Factory, tmp_path: Path) -> None:
    # This host's clock is two days behind CoinGecko's: the "last 12 hours" it asks for
    # 5-minutely points are, to CoinGecko, days ago, and come back hourly.
    rt = runtime(rt_clock=FakeClock(NOW - 2 * DAY_MS, autoadvance=True))
    res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"], timeframe="5m",
                    lookback="12h")
    assert res.ok, res.errors
    assert any("it returned 1h ones: stored as 1h, not as 5m" in w for w in res.warnings)
    got = prices(rt)
    assert set(got["timeframe"].to_pylist()) == {"1h"} and got.num_rows > 0
    assert rt.state.get_checkpoint(CHECKPOINT_JOB, checkpoint_key(
        "cg", "bitcoin", "main", "5m", "market_chart")) is None


async def test_a_wrong_key_names_the_source_and_the_config_path_not_the_key(
        runtime: Factory) -> None:
    rt = runtime(key="CG-not-my-key-9")
    res = await run(rt, "coingecko_prices", source="cg", coins=["btc"], lookback="2d")
    assert not res.ok
    text = " ".join(res.errors)
    assert "source cg" in text and "sources.cg.api_key" in text
    assert "CG-not-my-key-9" not in text


async def test_an_ambiguous_symbol_lists_its_candidates_and_spares_the_others(
        runtime: Factory) -> None:
    rt = runtime()
    res = await run(rt, "coingecko_prices", source="cg", coins=["eth", "btc"], lookback="2d")
    assert len(res.errors) == 1
    assert "ambiguous" in res.errors[0] and "ethereum-wormhole" in res.errors[0]
    assert "params.coins" in res.errors[0]
    assert prices(rt).num_rows == 48


async def test_the_quality_job_catches_a_hole(runtime: Factory) -> None:
    rt = runtime()
    end = NOW // HOUR_MS * HOUR_MS
    for start, stop in ((end - 2 * DAY_MS, end - 30 * HOUR_MS), (end - 26 * HOUR_MS, end)):
        res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"],
                        start=start, end=stop, refetch=True)
        assert res.ok, res.errors
    q = await run(rt, "coingecko_quality", source="cg", coins=["btc"], window="2d")
    assert len(q.errors) == 1 and "4 of 48 1h points missing" in q.errors[0]
    row = q.details["coins"]["btc"]
    assert row["coin_id"] == "bitcoin" and row["points"] == 44 and row["missing"] == 4
    assert row["granularity_seen"] == "1h" and row["null_values"] == 0
    assert row["holes"] == [[fmt_ms(end - 30 * HOUR_MS), fmt_ms(end - 27 * HOUR_MS)]]
    ok = await run(rt, "coingecko_quality", source="cg", coins=["bitcoin"], window="2d",
                   max_missing=4)
    assert ok.ok, ok.errors


async def test_a_run_into_postgresql_upserts_idempotently(
        runtime: Factory, pg_url: str) -> None:  # noqa: F811
    rt = runtime(store={"type": "postgresql", "dsn": pg_url})
    for _ in range(2):
        res = await run(rt, "coingecko_prices", source="cg", coins=["bitcoin"],
                        lookback="2d", refetch=True)
        assert res.ok, res.errors
    got = prices(rt)
    assert got.num_rows == 48 and set(got["timeframe"].to_pylist()) == {"1h"}
    assert got.schema.field("volume_24h").type == pa.float64()


# ------------------------------------------------------------------ config

def config(tmp_path: Path, job_params: dict[str, Any], source: dict[str, Any] | None = None,
           series: list[dict[str, Any]] | None = None) -> Any:
    return parse_config({
        "stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
        "sources": {"cg": source or {"type": "coingecko", "api_key": "k"}},
        "series": series or [],
        "jobs": [{"name": "cg", "type": "coingecko_prices", "params": job_params}],
    }, str(tmp_path / "c.yaml"), tmp_path)


def test_config_refuses_a_timeframe_the_plan_cannot_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, {"source": "cg", "coins": ["btc"], "timeframe": "1m",
                          "lookback": "2d"})
    assert err.value.key == "jobs[0].params.timeframe"
    assert "possible: 5m (last 24 h only), 1h, 1d, and 30m/4h OHLC" in str(err.value)
    # No endpoint was given: no endpoint is to blame, CoinGecko as a whole cannot.
    assert "CoinGecko cannot give 1m" in str(err.value) and "ohlc" not in str(err.value)
    with pytest.raises(ConfigError, match="ohlc cannot give 1h on the demo plan"):
        config(tmp_path, {"source": "cg", "coins": ["btc"], "timeframe": "1h",
                          "endpoint": "ohlc", "lookback": "2d"})


def test_config_refuses_coingecko_series_and_keyless_pro(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, {"source": "cg", "coins": ["btc"], "lookback": "2d"},
               series=[{"source": "cg", "symbols": ["BTC/USD"], "timeframes": ["1h"]}])
    assert err.value.key == "series[0].source" and "coingecko_prices" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"stores": {"main": {"type": "duckdb", "path": "x.duckdb"}},
                      "sources": {"cg": {"type": "coingecko"}, "s": {"type": "sim"}},
                      "series": [{"source": "s", "symbols": ["BTC/USDT"], "timeframes": ["1h"],
                                  "fallback": ["cg"]}]}, str(tmp_path / "c.yaml"), tmp_path)
    assert err.value.key == "series[0].fallback[0]"
    with pytest.raises(ConfigError) as err:
        config(tmp_path, {"source": "cg", "coins": ["btc"], "lookback": "2d"},
               source={"type": "coingecko", "plan": "pro"})
    assert err.value.key == "sources.cg.api_key"
    with pytest.raises(ConfigError) as err:
        config(tmp_path, {"source": "cg", "coins": ["btc", "BTC"], "lookback": "2d"})
    assert err.value.key == "jobs[0].params.coins[1]"


def test_job_params_need_a_window(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"source": "cg", "coins": ["btc"]})
    with pytest.raises(ConfigError, match="give either lookback"):
        load_jobs(cfg)


def test_the_example_mirrors_the_nightly_job(tmp_path: Path) -> None:
    env = {"COINGECKO_API_KEY": "CG-x", "CANDLEKEEP_PG_DSN": "postgresql://u@h/db"}
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE), tmp_path, env=env)
    assert cfg.stores["pg"].type == "postgresql"
    jobs = {j.name: j for j in load_jobs(cfg)}
    prices_job, quality = jobs["coingecko.backfill"], jobs["coingecko.quality"]
    assert cfg.job("coingecko.backfill").schedule == "0 2 * * *"  # type: ignore[union-attr]
    assert cfg.job("coingecko.quality").schedule == "30 2 * * *"  # type: ignore[union-attr]
    assert cfg.timezone == "UTC"
    p: Any = prices_job.params
    assert p.timeframe == "1h" and p.lookback == 2 * 86_400 and p.store == "pg"
    assert quality.params.window == 2 * 86_400  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="COINGECKO_API_KEY is not set"):
        parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE), tmp_path,
                     env={"CANDLEKEEP_PG_DSN": "postgresql://u@h/db"})
