"""The tracker's test bench: the sim exchange (REST + archive) over loopback HTTP, a config
with a ccxt ``binanceusdm`` source pointing at it, a real store, and one attempt of the
``availability`` job as the run path makes it.

The sim's clock (which files exist) and the runtime's clock (what "yesterday" is, and the
retries' sleeps) are separate FakeClocks at NOW: a test moves both to let a day pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from candlekeep.availability.dataset import AVAILABILITY
from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.base import JobResult
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.sim.archive import ArchiveFault, ArchiveSpec
from candlekeep.sim.exchange import Delisting, SimExchange
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2025-03-01T06:00:00Z")
TODAY = dt.date(2025, 3, 1)
ODD = "币安人生"  # a real Binance USDⓈ-M perpetual: 币安人生USDT
SYMBOLS: dict[str, int | str] = {
    "BTC/USDT": "2019-09-08",
    "ETH/USDT": "2019-11-27",
    "NEW/USDT": "2025-02-20T10:00:00Z",  # listed inside the window
    "OLD/USDT": "2021-01-01",  # delisted 2025-02-15, still in exchangeInfo (SETTLING)
    "GONE/USDT": "2021-01-01",  # delisted 2025-02-18, gone from exchangeInfo
    f"{ODD}/USDT": "2024-10-01",
}
DELISTINGS = {"OLD/USDT": Delisting("2025-02-15"),
              "GONE/USDT": Delisting("2025-02-18", in_exchange_info=False)}
IDS = ["BTCUSDT", "ETHUSDT", "GONEUSDT", "NEWUSDT", "OLDUSDT", f"{ODD}USDT"]
UM = "data/futures/um/daily/klines"


DATA_TYPE = "klines/1h"
"""What the tests track: 1h files build in a millisecond (a 1m file takes ten), and the
tracker treats every interval alike; one test probes the default klines/1m."""


def key(symbol_id: str, day: str, interval: str = "1h") -> str:
    """The archive key prefix of one daily file (a fault's ``path``)."""
    return f"{UM}/{symbol_id}/{interval}/{symbol_id}-{interval}-{day}"


@dataclass
class Bench:
    tmp: Path
    sim_clock: FakeClock = field(default_factory=lambda: FakeClock(NOW))
    rt_clock: FakeClock = field(default_factory=lambda: FakeClock(NOW, autoadvance=True))
    stack: ExitStack = field(default_factory=ExitStack)
    runtimes: list[Runtime] = field(default_factory=list)
    exchange: SimExchange | None = None
    url: str = ""

    def serve(self, *faults: ArchiveFault, page_size: int = 2, **exchange: Any) -> str:
        self.exchange = SimExchange(7, SYMBOLS, clock=self.sim_clock, transient=None,
                                    delistings=DELISTINGS, **exchange)
        spec = ArchiveSpec(faults=faults, page_size=page_size, intervals=("1m", "1h", "1d"))
        self.url = self.stack.enter_context(run_in_thread(self.exchange, archive=spec))
        return self.url

    def runtime(self, store: dict[str, Any] | None = None, *, bulk: bool = True,
                **job: Any) -> Runtime:
        source: dict[str, Any] = {"type": "ccxt", "exchange": "binanceusdm",
                                  "market_type": "swap", "base_url": self.url,
                                  "max_attempts": 2}
        if bulk:
            source["bulk"] = {"base_url": self.url}
        params = {"listing_url": f"{self.url}/data.binance.vision", "data_type": DATA_TYPE,
                  **job}
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": store or {"type": "duckdb", "path": "data/avail.duckdb"}},
            "sources": {"um": source},
            "jobs": [{"name": "tracker", "type": "availability", "params": params}],
        }, str(self.tmp / "candlekeep.yaml"), self.tmp)
        rt = Runtime(cfg, clock=self.rt_clock)
        self.runtimes.append(rt)
        return rt

    async def pass_days(self, days: int) -> None:
        self.sim_clock.set(self.sim_clock.now_ms() + days * 86_400_000)
        await self.rt_clock.advance(days * 86_400)

async def run(rt: Runtime, **params: Any) -> JobResult:
    """One attempt of the configured ``tracker`` job with ``params`` on top of its own."""
    job = rt.config.job("tracker")
    assert job is not None
    p = build_params("availability", {**job.params, **params})
    attempt = await execute_attempt(rt, adhoc_spec("availability", p, "tracker"),
                                    asyncio.Event())
    res = attempt.result if attempt.result is not None else JobResult()
    if attempt.error and not res.errors:
        res.errors.append(attempt.error)
    return res


def rows(rt: Runtime) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored rows by (symbol, date ISO)."""
    t: pa.Table = rt.store("main").read(AVAILABILITY)
    return {(r["symbol"], r["date"].isoformat()): r for r in t.to_pylist()}


def statuses(rt: Runtime, symbol: str) -> dict[str, str]:
    return {d: r["status"] for (s, d), r in rows(rt).items() if s == symbol}


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    b = Bench(tmp_path)
    try:
        yield b
    finally:
        for rt in b.runtimes:
            await rt.aclose()
        b.stack.close()
