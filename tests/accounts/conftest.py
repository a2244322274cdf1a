"""Hyperliquid accounts against the sim over HTTP: a sim, a config naming its accounts, a
runtime with a real store, and the job run through the run path.

One FakeClock (autoadvance: retries and the weight limiter sleep on it without waiting)
is the sim's and the runtime's: "now" moves only when a test or a sleep moves it, so the
sim's truth at the end of a run is what the run could see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from candlekeep.accounts import datasets as ds
from candlekeep.accounts.cursors import CHECKPOINT_JOB, CURSOR_TAGS, cursor_key
from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.datasets import Dataset
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.base import JobResult
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.records import Fill, FundingPayment, LedgerEvent, Order
from candlekeep.sim.hyperliquid.spec import AccountSpec, HyperliquidSpec, derive_addresses
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2024-12-01T12:00:30Z")
START = to_ms("2024-11-16")
ALICE, BOB, IDLE = derive_addresses(7, 3)
SOURCE = "hl"


UNLIMITED = 10**9
"""The sim's weight budget in these tests: waiting out the limiter would move the clock
(and reveal new events) between a run and the next; the source's pacing has tests of its
own."""


def default_spec(**extra: Any) -> HyperliquidSpec:
    """Two busy accounts on the same coins (their fills, funding and ledger overlap in time
    and coin) and one with no activity at all."""
    return HyperliquidSpec(accounts=(
        AccountSpec(ALICE, fills_per_day=40, start=START),
        AccountSpec(BOB, fills_per_day=25, start=START, coins=("BTC", "ETH")),
        AccountSpec(IDLE, fills_per_day=0, ledger_per_day=0, start=START)),
        weight_limit=UNLIMITED, **extra)


@dataclass
class Hl:
    """One sim and one runtime over it."""

    sim: HyperliquidSim
    url: str
    clock: FakeClock
    rt: Runtime

    async def run(self, dry_run: bool = False, **params: Any) -> tuple[JobResult, str | None]:
        """One attempt of the job, through the run path as any job runs."""
        spec = adhoc_spec("hyperliquid_accounts",
                          build_params("hyperliquid_accounts", params), name="hl_accounts")
        attempt = await execute_attempt(self.rt, spec, asyncio.Event(), dry_run=dry_run)
        return attempt.result or JobResult(), attempt.error

    async def ok(self, **params: Any) -> JobResult:
        res, error = await self.run(**params)
        assert error is None and res.ok, (error, res.errors)
        return res

    def stored(self, dataset: Dataset, address: str | None = None,
               store: str = "main") -> pa.Table:
        where = {"address": address} if address is not None else None
        return self.rt.store(store).read(dataset, where=where)

    def cursor(self, address: str, pull: str, store: str = "main") -> int | None:
        return self.rt.state.get_checkpoint(CHECKPOINT_JOB, cursor_key(
            SOURCE, address, store, CURSOR_TAGS[pull]))

    def set_now(self, ms: int) -> None:
        self.clock.set(ms)

    def requests(self) -> dict[str, int]:
        return dict(self.sim.requests_by_type)


def make_config(tmp_path: Path, url: str, stores: dict[str, Any] | None = None,
                **extra: Any) -> Any:
    raw = {
        "data_dir": "data",
        "stores": stores or {"main": {"type": "duckdb", "path": "data/accounts.duckdb"}},
        "sources": {SOURCE: {"type": "hyperliquid", "base_url": url, "max_attempts": 3,
                            "weight_per_minute": UNLIMITED}},
        "accounts": [{"name": "alice", "address": ALICE, "source": SOURCE},
                     {"name": "bob", "address": BOB, "source": SOURCE},
                     {"name": "idle", "address": IDLE, "source": SOURCE}],
        **extra,
    }
    return parse_config(raw, str(tmp_path / "candlekeep.yaml"), tmp_path)


HlFactory = Callable[..., Hl]


@pytest.fixture
def served() -> Iterator[Callable[[HyperliquidSpec], tuple[HyperliquidSim, str, FakeClock]]]:
    """Start a sim of a spec (at most one per test)."""
    stack: list[Any] = []

    def start(spec: HyperliquidSpec) -> tuple[HyperliquidSim, str, FakeClock]:
        clock = FakeClock(NOW, autoadvance=True)
        ex = SimExchange(7, clock=clock, holes=None, transient=None)
        sim = HyperliquidSim(ex, spec)
        ctx = run_in_thread(ex, hyperliquid=sim)
        url = ctx.__enter__()
        stack.append(ctx)
        return sim, url, clock

    yield start
    for ctx in stack:
        ctx.__exit__(None, None, None)


@pytest.fixture
async def make_hl(tmp_path: Path, served: Any) -> AsyncIterator[HlFactory]:
    made: list[Runtime] = []

    def factory(spec: HyperliquidSpec | None = None,
                stores: dict[str, Any] | None = None, **extra: Any) -> Hl:
        sim, url, clock = served(spec or default_spec())
        rt = Runtime(make_config(tmp_path, url, stores, **extra), clock=clock)
        made.append(rt)
        return Hl(sim, url, clock, rt)

    yield factory
    for rt in made:
        await rt.aclose()


@pytest.fixture
async def hl(make_hl: HlFactory) -> Hl:
    return make_hl()


# ------------------------------------------------------------------------ the truth as rows


def fill_truth(fills: list[Fill]) -> list[tuple[Any, ...]]:
    return sorted((f.tid, f.time, f.coin, f.px, f.sz, f.side, f.dir, f.start_position,
                   f.closed_pnl, f.fee, f.builder_fee, f.oid, f.hash, f.crossed)
                  for f in fills)


FILL_COLUMNS = ("tid", "time", "coin", "px", "sz", "side", "dir", "start_position",
                "closed_pnl", "fee", "builder_fee", "oid", "hash", "crossed")


def funding_truth(payments: list[FundingPayment]) -> list[tuple[Any, ...]]:
    return sorted((p.time, p.coin, p.usdc, p.szi, p.funding_rate) for p in payments)


FUNDING_COLUMNS = ("time", "coin", "usdc", "szi", "funding_rate")


def ledger_truth(events: list[LedgerEvent]) -> list[tuple[Any, ...]]:
    return sorted((e.time, e.hash, e.delta["type"]) for e in events)


LEDGER_COLUMNS = ("time", "hash", "kind")


def order_truth(orders: list[Order], now: int) -> list[tuple[Any, ...]]:
    return sorted((o.oid, o.coin, o.side, o.limit_px, o.sz, o.timestamp, o.status(now),
                   o.status_timestamp(now)) for o in orders)


ORDER_COLUMNS = ("oid", "coin", "side", "limit_px", "orig_sz", "order_time", "status",
                 "status_ts")


def rows(table: pa.Table, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """``columns`` of ``table`` as sorted tuples, times as epoch ms."""
    cols = []
    for c in columns:
        col = table.column(c)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
        cols.append(col.to_pylist())
    return sorted(zip(*cols, strict=True))


__all__ = ["ALICE", "BOB", "IDLE", "NOW", "START", "ds"]
