"""Bulk backfill: a Binance source with ``bulk`` against the simulated exchange over HTTP
(REST and archive on one server). Whatever the archive does, the store ends up holding
exactly the exchange's candles, and every bad file is named and replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec, FaultKind
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.server import run_in_thread
from tests.jobs.test_pipeline import run

NOW = to_ms("2025-01-03T12:00:30Z")
START = to_ms("2024-10-15")
KEY = SeriesKey("bn", "BTC/USDT", "15m")
DAILY = "data/spot/daily/klines/BTCUSDT/15m/BTCUSDT-15m-"
MONTHLY = "data/spot/monthly/klines/BTCUSDT/15m/BTCUSDT-15m-"


@pytest.fixture(scope="module")
def exchange() -> SimExchange:
    return SimExchange(7, {"BTC/USDT": "2017-08-17"}, clock=FakeClock(NOW), transient=None)


Served = Callable[..., Any]


@pytest.fixture
def serve(exchange: SimExchange) -> Iterator[Callable[..., str]]:
    """Start the sim (REST + archive) with these archive faults; returns its URL."""
    stack: list[Any] = []

    def start(*faults: ArchiveFault) -> str:
        cm = run_in_thread(exchange, archive=ArchiveSpec(faults=faults))
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in stack:
        cm.__exit__(None, None, None)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(url: str, *, bulk: bool = True, start: int = START,
             timeout: float = 120.0) -> Runtime:
        source: dict[str, Any] = {"type": "ccxt", "exchange": "binance", "base_url": url,
                                  "max_attempts": 2}
        if bulk:
            source["bulk"] = {"base_url": url, "concurrency": 3, "timeout": timeout}
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
            "sources": {"bn": source},
            "series": [{"source": "bn", "symbols": ["BTC/USDT"], "timeframes": ["15m"],
                        "start": start}],
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=FakeClock(NOW, autoadvance=True))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def stored(rt: Runtime) -> pa.Table:
    t = rt.store("main").read_candles(KEY)
    return t.drop_columns(["ingested_at"]).sort_by("ts")


def truth(ex: SimExchange) -> pa.Table:
    t = ex.expected(KEY.symbol, KEY.timeframe, START, NOW, source="bn")
    return t.drop_columns(["ingested_at"]).sort_by("ts")


def assert_equal(got: pa.Table, want: pa.Table) -> None:
    assert got.num_rows == want.num_rows
    for col in want.column_names:
        assert got[col].cast(want.schema.field(col).type).equals(want[col]), col


async def test_bulk_backfill_stores_exactly_the_exchange_candles(
    exchange: SimExchange, serve: Callable[..., str], runtime: Callable[..., Runtime]
) -> None:
    rt = runtime(serve())
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert not res.warnings
    assert_equal(stored(rt), truth(exchange))
    # October (17 days, more than a week) + November + December monthly, Jan 1 and 2 daily
    # (Jan 2025 spot files hold microsecond times), and only Jan 3 through REST.
    assert res.details["archive"]["files"] == 5
    assert res.details["archive"]["rejected"] == 0
    assert res.requests < 10, "only today goes through REST"
    assert rt.state.get_checkpoint("backfill", KEY) == NOW // 900_000 * 900_000
    assert "gaps" in res.details  # the usual gap scan ran over what the archive gave


async def test_dry_run_names_files_and_rest_ranges_and_writes_nothing(
    serve: Callable[..., str], runtime: Callable[..., Runtime]
) -> None:
    rt = runtime(serve())
    res = await run_dry(rt)
    assert res.ok
    (line,) = res.details["plan"]
    assert "3 monthly files (BTCUSDT-15m-2024-10.zip … BTCUSDT-15m-2024-12.zip)" in line
    assert "2 daily files (BTCUSDT-15m-2025-01-01.zip … BTCUSDT-15m-2025-01-02.zip)" in line
    assert "REST 2025-01-03 00:00" in line
    files = res.details["archive_plan"][str(KEY)]["files"]
    assert files[0] == "BTCUSDT-15m-2024-10.zip" and len(files) == 5
    assert rt.store("main").read_candles(KEY).num_rows == 0
    assert rt.state.get_checkpoint("backfill", KEY) is None


async def run_dry(rt: Runtime) -> Any:
    import asyncio

    from candlekeep.jobs.runner import build_params
    from candlekeep.scheduler.manual import adhoc_spec
    from candlekeep.scheduler.runpath import execute_attempt

    attempt = await execute_attempt(rt, adhoc_spec("backfill", build_params("backfill", {})),
                                    asyncio.Event(), dry_run=True)
    assert attempt.result is not None
    return attempt.result


async def test_every_bad_file_is_named_and_its_range_comes_from_elsewhere(
    exchange: SimExchange, serve: Callable[..., str], runtime: Callable[..., Runtime]
) -> None:
    url = serve(
        ArchiveFault(FaultKind.BAD_CHECKSUM, MONTHLY + "2024-11", times=1),  # healed by refetch
        ArchiveFault(FaultKind.BAD_CHECKSUM, MONTHLY + "2024-12"),  # → December's daily files
        ArchiveFault(FaultKind.BAD_NUMBER, DAILY + "2024-12-05"),  # → REST for that day
        ArchiveFault(FaultKind.WRONG_DATE, DAILY + "2024-12-06"),  # → REST
        ArchiveFault(FaultKind.MISSING, DAILY + "2025-01-01"),  # 404 → REST, no warning
        ArchiveFault(FaultKind.TRUNCATED, DAILY + "2025-01-02"),  # → REST
        ArchiveFault(FaultKind.ERROR, MONTHLY + "2024-10"),  # 5xx → daily files, then ok
        ArchiveFault(FaultKind.SLOW, DAILY + "2024-12-07", delay_s=3.0),  # timeouts → REST
    )
    rt = runtime(url, timeout=0.4)
    res = await run(rt, "backfill")
    assert res.ok, res.errors
    assert_equal(stored(rt), truth(exchange))
    text = "\n".join(res.warnings)
    for name in ("BTCUSDT-15m-2024-12.zip", "BTCUSDT-15m-2024-12-05.csv",
                 "BTCUSDT-15m-2024-12-06.csv", "BTCUSDT-15m-2025-01-02.zip",
                 "BTCUSDT-15m-2024-12-07.zip",
                 "BTCUSDT-15m-2024-10"):
        assert name in text, name
    assert "2025-01-01" not in text, "a 404 is routine: logged, not warned"
    stats = res.details["archive"]
    assert stats["refetched"] >= 2  # November once (healed), December once (still bad)
    assert stats["missing"] == 1
    assert stats["rejected"] == 4  # December monthly, Dec 5, Dec 6, Jan 2
    assert stats["unavailable"] == 2  # October monthly (5xx), Dec 7 (slow) after retries


async def test_rerun_resumes_from_the_checkpoint_and_restart_refetches(
    exchange: SimExchange, serve: Callable[..., str], runtime: Callable[..., Runtime]
) -> None:
    rt = runtime(serve())
    first = await run(rt, "backfill")
    assert first.ok
    again = await run(rt, "backfill")
    assert again.ok and again.rows_written == 0
    assert again.details["archive"]["files"] == 0
    restarted = await run(rt, "backfill", restart=True)
    assert restarted.details["archive"]["files"] == 5
    assert_equal(stored(rt), truth(exchange))


async def test_without_bulk_the_same_candles_come_through_rest(
    exchange: SimExchange, serve: Callable[..., str], runtime: Callable[..., Runtime]
) -> None:
    url = serve()
    rest_only = runtime(url, bulk=False)
    res = await run(rest_only, "backfill")
    assert res.ok and "archive" not in res.details
    assert res.requests > 8
    assert_equal(stored(rest_only), truth(exchange))
    assert pc.sum(pc.is_null(stored(rest_only)["trades"])).as_py() == 0
