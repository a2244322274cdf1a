"""Order books from Hyperliquid over HTTP: ``HyperliquidSource.order_book`` against the
sim's ``l2Book`` (wire format, weight, unknown coins), the ``orderbook`` job on a
hyperliquid source storing in DuckDB, and malformed replies rejected before storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import BadReplyError, SourceError
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
from candlekeep.scans.orderbook import snapshot_row
from candlekeep.scheduler.runpath import execute_attempt
from candlekeep.scheduler.validate import load_jobs
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.market import BOOK_LEVELS
from candlekeep.sim.server import run_in_thread
from candlekeep.sources.hyperliquid.source import HyperliquidSource
from tests.jobs.test_pipeline import run

NOW = to_ms("2024-12-01T12:00:30Z")


def make_sim(cls: type[HyperliquidSim] = HyperliquidSim) -> HyperliquidSim:
    ex = SimExchange(7, clock=FakeClock(NOW, autoadvance=True), holes=None, transient=None)
    return cls(ex)


@pytest.fixture
def hl() -> HyperliquidSim:
    return make_sim()


@pytest.fixture
def url(hl: HyperliquidSim) -> Iterator[str]:
    with run_in_thread(hl.exchange, hyperliquid=hl) as base:
        yield base


@pytest.fixture
async def source(hl: HyperliquidSim, url: str) -> AsyncIterator[HyperliquidSource]:
    src = HyperliquidSource("hl", url, clock=hl.clock, max_attempts=2)
    yield src
    await src.close()


# ---------------------------------------------------------------------- the sim's wire


def test_l2book_wire_format_and_unknown_coin(hl: HyperliquidSim, url: str) -> None:
    with httpx.Client(base_url=url) as http:
        reply = http.post("/info", json={"type": "l2Book", "coin": "BTC", "nSigFigs": None,
                                         "mantissa": None}).json()
        assert set(reply) == {"coin", "time", "levels"}
        assert reply["coin"] == "BTC" and reply["time"] == hl.now_ms()
        bids, asks = reply["levels"]
        assert len(bids) == len(asks) == BOOK_LEVELS
        level = bids[0]
        assert set(level) == {"px", "sz", "n"}
        assert isinstance(level["px"], str) and isinstance(level["sz"], str)
        assert isinstance(level["n"], int) and level["n"] >= 1
        px = [float(lv["px"]) for lv in bids], [float(lv["px"]) for lv in asks]
        assert px[0] == sorted(px[0], reverse=True) and px[1] == sorted(px[1])
        assert px[0][0] < px[1][0]
        # Hyperliquid answers a coin it does not list with null, not an error.
        gone = http.post("/info", json={"type": "l2Book", "coin": "NOPE"})
        assert gone.status_code == 200 and gone.json() is None
        bad = http.post("/info", json={"type": "l2Book", "coin": "BTC", "nSigFigs": "5"})
        assert bad.status_code == 422


def test_the_book_matches_the_candles(hl: HyperliquidSim) -> None:
    book = hl.l2_book("ETH")
    assert book is not None
    last_close = hl.candles("ETH", "1m", NOW - 120_000, NOW - 60_000).close[-1]
    mid = (book.bids[0, 0] + book.asks[0, 0]) / 2
    assert abs(mid / last_close - 1) < 0.01  # mid sits at the last closed 1m close
    assert hl.l2_book("@9") is None


# ---------------------------------------------------------------------- the source


@pytest.mark.parametrize("symbol, coin", [("BTC/USDC:USDC", "BTC"), ("PURR/USDC", "PURR/USDC"),
                                          ("HYPE/USDC", "@1")])
async def test_source_reads_the_sims_book(source: HyperliquidSource, hl: HyperliquidSim,
                                          symbol: str, coin: str) -> None:
    await source.markets()
    before = source.stats.weight_used
    bids, asks = await source.order_book(symbol, 100)
    truth = hl.l2_book(coin)
    assert truth is not None
    np.testing.assert_array_equal(bids, truth.bids)
    np.testing.assert_array_equal(asks, truth.asks)
    assert source.stats.weight_used - before == 2  # l2Book is a light request
    assert hl.requests_by_type["l2Book"] == 1
    row = snapshot_row("hl", symbol, NOW, bids, asks, ingested_ms=NOW)
    assert row["bid_levels"] == row["ask_levels"] == BOOK_LEVELS


async def test_a_small_limit_trims_the_book(source: HyperliquidSource,
                                            hl: HyperliquidSim) -> None:
    bids, asks = await source.order_book("SOL/USDC:USDC", 5)
    truth = hl.l2_book("SOL")
    assert truth is not None
    np.testing.assert_array_equal(bids, truth.bids[:5])
    np.testing.assert_array_equal(asks, truth.asks[:5])


async def test_an_unlisted_symbol_fails_without_a_book_request(
        source: HyperliquidSource, hl: HyperliquidSim) -> None:
    with pytest.raises(SourceError, match="NOPE/USDC:USDC"):
        await source.order_book("NOPE/USDC:USDC", 20)
    assert "l2Book" not in hl.requests_by_type


# ---------------------------------------------------------------------- the job


async def test_job_stores_snapshots_of_a_hyperliquid_source(tmp_path: Path, url: str,
                                                            hl: HyperliquidSim) -> None:
    cfg = parse_config({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/books.duckdb"}},
        "sources": {"hl": {"type": "hyperliquid", "base_url": url, "max_attempts": 2}},
        "jobs": [{"name": "books", "type": "orderbook", "schedule": "*/5 * * * *",
                  "params": {"source": "hl",
                             "symbols": ["BTC/USDC:USDC", "HYPE/USDC", "XYZ/USDC"]}}],
    }, str(tmp_path / "candlekeep.yaml"), tmp_path)
    (spec,) = load_jobs(cfg)
    rt = Runtime(cfg, clock=hl.clock)
    try:
        attempt = await execute_attempt(rt, spec, asyncio.Event())
        res = attempt.result
        assert res is not None and res.ok, (attempt.error, res)
        assert res.rows_written == 2
        assert [f["symbol"] for f in res.details["failed"]] == ["XYZ/USDC"]
        got = rt.store("main").read(ORDERBOOK_SNAPSHOTS).sort_by("symbol")
        assert got["symbol"].to_pylist() == ["BTC/USDC:USDC", "HYPE/USDC"]
        assert set(got["source"].to_pylist()) == {"hl"}
        btc = hl.l2_book("BTC")
        assert btc is not None
        bid, ask = got["bid"].to_pylist()[0], got["ask"].to_pylist()[0]
        assert (bid, ask) == (btc.bids[0, 0], btc.asks[0, 0])
        assert got["bid_levels"].to_pylist() == [BOOK_LEVELS, BOOK_LEVELS]
    finally:
        await rt.aclose()


# ---------------------------------------------------------------------- malformed replies


class BrokenBooks(HyperliquidSim):
    """The sim with every l2Book answered by ``reply``: a real server, a bad book."""

    reply: Any = None

    def answer(self, payload: dict[str, Any]) -> tuple[Any, int]:
        if payload["type"] == "l2Book":
            return self.reply, 0
        return super().answer(payload)


def good(coin: str = "BTC", **level: Any) -> dict[str, Any]:
    bid = {"px": "100.0", "sz": "1.5", "n": 2} | level
    return {"coin": coin, "time": NOW, "levels": [[bid], [{"px": "101.0", "sz": "2.0", "n": 1}]]}


@pytest.mark.parametrize("reply, reason", [
    (None, "null: no book for coin 'BTC'"),
    ([], "expected the book of 'BTC', got list"),
    (good("ETH"), "expected the book of 'BTC', got 'ETH'"),
    ({"coin": "BTC", "time": NOW, "levels": [[]]}, r"levels is not \[bids, asks\]"),
    (good(px=100.0), "not decimal strings"),
    (good(sz=None), "not decimal strings"),
    (good(px="abc"), "malformed book"),
    ({"coin": "BTC", "time": NOW, "levels": [["x"], []]}, "not an object"),
])
async def test_a_malformed_book_is_rejected(reply: Any, reason: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    hl = make_sim(BrokenBooks)
    hl.reply = reply
    with run_in_thread(hl.exchange, hyperliquid=hl) as url:
        src = HyperliquidSource("hl", url, clock=hl.clock, max_attempts=2)
        try:
            with pytest.raises(BadReplyError, match=reason):
                await src.order_book("BTC/USDC:USDC", 20)
        finally:
            await src.close()
    assert src.stats.rejected_replies == 1
    assert hl.requests_by_type["l2Book"] == 1  # rejected, not retried
    assert "reply rejected source=hl what=BTC/USDC:USDC l2Book" in caplog.text


async def test_job_stores_nothing_of_a_malformed_book(tmp_path: Path) -> None:
    hl = make_sim(BrokenBooks)
    hl.reply = good(px="abc")
    with run_in_thread(hl.exchange, hyperliquid=hl) as url:
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/books.duckdb"}},
            "sources": {"hl": {"type": "hyperliquid", "base_url": url, "max_attempts": 2}},
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        rt = Runtime(cfg, clock=hl.clock)
        try:
            res = await run(rt, "orderbook", source="hl", symbols=["BTC/USDC:USDC"])
            assert not res.ok and res.rows_written == 0
            assert "malformed book" in res.details["failed"][0]["reason"]
            assert rt.store("main").read(ORDERBOOK_SNAPSHOTS).num_rows == 0
        finally:
            await rt.aclose()
