"""Order-book metrics on hand-checked books, the sim's books against its candles (in
process), and the ``orderbook`` job storing snapshots in DuckDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.config import parse_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.errors import BadReplyError, ConfigError, SourceError
from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.scans.datasets import ORDERBOOK_SNAPSHOTS
from candlekeep.scans.orderbook import snapshot_row
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.generator import price_decimals
from candlekeep.sources.orderbook import in_base_units, levels
from candlekeep.sources.sim_source import SimSource
from tests.jobs.test_pipeline import run

NOW = to_ms("2025-03-04T05:06:07.890Z")
BIDS = np.array([[99.9, 2.0], [99.0, 10.0], [98.0, 5.0], [97.0, 100.0]])
ASKS = np.array([[100.1, 1.0], [101.0, 3.0], [102.0, 4.0], [103.0, 50.0]])


def row(bids: Any, asks: Any) -> dict[str, Any]:
    return snapshot_row("src", "X/USDT", NOW, np.asarray(bids, float), np.asarray(asks, float),
                        ingested_ms=NOW)


# ---------------------------------------------------------------------- metrics


def test_metrics_of_a_small_book_by_hand() -> None:
    r = row(BIDS, ASKS)
    assert (r["bid"], r["ask"]) == (99.9, 100.1)
    assert r["mid"] == pytest.approx(100.0)
    assert r["spread_bps"] == pytest.approx(20.0)  # 0.2 / 100 * 1e4
    # Levels at exactly 98 and 102 are 2 % from mid: counted; 97 and 103 are not.
    assert r["bid_depth_quote"] == pytest.approx(99.9 * 2 + 99 * 10 + 98 * 5)  # 1679.8
    assert r["ask_depth_quote"] == pytest.approx(100.1 * 1 + 101 * 3 + 102 * 4)  # 811.1
    assert r["depth_quote"] == r["ask_depth_quote"]
    assert (r["bid_levels"], r["ask_levels"]) == (4, 4)


def test_level_order_does_not_matter() -> None:
    assert row(BIDS[::-1], ASKS[[2, 0, 3, 1]]) == row(BIDS, ASKS)


def test_band_edge_counts_and_just_past_it_does_not() -> None:
    at_edge = row([[99.9, 1.0], [98.0, 1.0]], [[100.1, 1.0], [102.0, 1.0]])
    past = row([[99.9, 1.0], [97.999, 1.0]], [[100.1, 1.0], [102.001, 1.0]])
    assert at_edge["bid_depth_quote"] == pytest.approx(99.9 + 98.0)
    assert at_edge["ask_depth_quote"] == pytest.approx(100.1 + 102.0)
    assert past["bid_depth_quote"] == pytest.approx(99.9)
    assert past["ask_depth_quote"] == pytest.approx(100.1)


@pytest.mark.parametrize(("bids", "asks", "reason"), [
    ([[100.2, 1.0]], [[100.1, 1.0]], "crossed"),
    ([[100.0, 1.0]], [[100.0, 1.0]], "crossed"),  # locked
    (np.empty((0, 2)), [[100.1, 1.0]], "no bids"),
    ([[99.9, 1.0]], np.empty((0, 2)), "no asks"),
    ([[float("nan"), 1.0]], [[100.1, 1.0]], "not finite"),
    ([[99.9, 1.0]], [[100.1, float("inf")]], "not finite"),
    ([[99.9, -1.0]], [[100.1, 1.0]], "not above 0"),
])
def test_unusable_books_are_rejected(bids: Any, asks: Any, reason: str) -> None:
    with pytest.raises(BadReplyError, match=reason):
        row(bids, asks)


def test_levels_from_a_reply() -> None:
    got = levels([["1.5", "2", 3], ["1.4", "0.5", 1]])  # strings and a count column
    assert got.tolist() == [[1.5, 2.0], [1.4, 0.5]]
    assert levels([]).shape == (0, 2)
    with pytest.raises(ValueError):
        levels([["1.5"]])
    with pytest.raises(ValueError):
        levels([["1.5", "x"]])


# ---------------------------------------------------------------------- the sim, in process


@pytest.fixture
def exchange() -> SimExchange:
    return SimExchange(7, clock=FakeClock(NOW, autoadvance=True), holes=None, transient=None)


@pytest.fixture
async def sim(exchange: SimExchange) -> AsyncIterator[SimSource]:
    src = SimSource("sim", exchange=exchange)
    yield src
    await src.close()


async def test_sim_book_sits_on_the_last_closed_candle(sim: SimSource,
                                                       exchange: SimExchange) -> None:
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        bids, asks = await sim.order_book(symbol, 100)
        r = snapshot_row("sim", symbol, NOW, bids, asks, ingested_ms=NOW)
        last = exchange.klines(symbol, "1m", end_ms=NOW - MINUTE_MS, limit=1)
        assert int(last.ts[0]) == NOW // MINUTE_MS * MINUTE_MS - MINUTE_MS
        tick = 10.0 ** -price_decimals(7, symbol)
        assert abs(r["mid"] - float(last.close[0])) <= tick
        assert (bids.shape, asks.shape) == ((100, 2), (100, 2))
        assert (np.diff(bids[:, 0]) < 0).all() and (np.diff(asks[:, 0]) > 0).all()


async def test_sim_books_differ_by_symbol_around_the_hot_gate(sim: SimSource) -> None:
    """Seed 7: ETH is liquid (passes 50 bps and 100k USD), BTC and SOL are not."""
    verdict = {}
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        r = snapshot_row("sim", symbol, NOW, *await sim.order_book(symbol, 100),
                         ingested_ms=NOW)
        verdict[symbol] = r["spread_bps"] <= 50 and r["depth_quote"] >= 100_000
    assert verdict == {"BTC/USDT": False, "ETH/USDT": True, "SOL/USDT": False}


async def test_sim_book_weighs_as_binance_depth_and_retries(sim: SimSource,
                                                            exchange: SimExchange) -> None:
    await sim.order_book("ETH/USDT", 100)
    assert sim.stats.weight_used == 5
    await sim.order_book("ETH/USDT", 500)
    assert sim.stats.weight_used == 5 + 25
    exchange.force("503", endpoint="depth")
    bids, _ = await sim.order_book("ETH/USDT", 5)
    assert bids.shape == (5, 2) and sim.stats.retries == 1


async def test_a_book_a_minute_later_differs(sim: SimSource, exchange: SimExchange) -> None:
    first = await sim.order_book("ETH/USDT", 20)
    again = await sim.order_book("ETH/USDT", 20)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert isinstance(exchange.clock, FakeClock)
    await exchange.clock.advance(60)
    later = await sim.order_book("ETH/USDT", 20)
    assert not np.array_equal(first[0], later[0])


async def test_sources_without_books_say_so(sim: SimSource) -> None:
    with pytest.raises(SourceError, match="no market"):
        await sim.order_book("NOPE/USDT", 5)


# ---------------------------------------------------------------------- the job


Factory = Callable[..., Runtime]


@pytest.fixture
async def runtime(tmp_path: Path, exchange: SimExchange) -> AsyncIterator[Factory]:
    made: list[Runtime] = []

    def make(**extra: Any) -> Runtime:
        cfg = parse_config({
            "data_dir": "data",
            "stores": {"main": {"type": "duckdb", "path": "data/books.duckdb"}},
            "sources": {"sim": {"type": "sim", "seed": 7}},
            **extra,
        }, str(tmp_path / "candlekeep.yaml"), tmp_path)
        clock = exchange.clock
        assert isinstance(clock, FakeClock)
        rt = Runtime(cfg, clock=clock, sources={"sim": SimSource("sim", exchange=exchange)})
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


def stored(rt: Runtime) -> pa.Table:
    return rt.store("main").read(ORDERBOOK_SNAPSHOTS).sort_by("symbol")


async def test_job_stores_one_row_per_symbol_and_lists_a_failure(
        runtime: Factory, exchange: SimExchange) -> None:
    rt = runtime()
    res = await run(rt, "orderbook", source="sim",
                    symbols=["ETH/USDT", "BTC/USDT", "NOPE/USDT"], limit=100)
    assert res.ok, res.errors
    assert res.rows_written == 2 and res.requests == 2  # two books (markets: in process)
    failed = res.details["failed"]
    assert [f["symbol"] for f in failed] == ["NOPE/USDT"]
    assert "no market 'NOPE/USDT'" in failed[0]["reason"]
    assert any("NOPE/USDT" in w for w in res.warnings)
    got = stored(rt)
    assert got["symbol"].to_pylist() == ["BTC/USDT", "ETH/USDT"]
    assert set(got["source"].to_pylist()) == {"sim"}
    assert pc.cast(got["ts"], pa.int64()).to_pylist() == [NOW, NOW]
    for i, symbol in enumerate(got["symbol"].to_pylist()):
        book = exchange.order_book(symbol, 100)
        expect = snapshot_row("sim", symbol, NOW, book.bids, book.asks, ingested_ms=NOW)
        for col in ("bid", "ask", "mid", "spread_bps", "bid_depth_quote", "ask_depth_quote",
                    "depth_quote", "bid_levels", "ask_levels"):
            assert got[col][i].as_py() == expect[col], col


async def test_job_over_a_fixed_universe(runtime: Factory) -> None:
    rt = runtime(universes={"majors": {"source": "sim", "store": "main",
                                       "symbols": ["SOL/USDT", "ETH/USDT"]}})
    res = await run(rt, "orderbook", universe="majors", limit=20)
    assert res.ok, res.errors
    assert res.details["failed"] == [] and res.rows_written == 2
    assert stored(rt)["bid_levels"].to_pylist() == [20, 20]


async def test_job_fails_when_every_symbol_fails(runtime: Factory) -> None:
    rt = runtime()
    res = await run(rt, "orderbook", source="sim", symbols=["NOPE/USDT"])
    assert not res.ok and "NOPE/USDT" in res.errors[0]
    assert rt.store("main").read(ORDERBOOK_SNAPSHOTS).num_rows == 0


async def test_unknown_universe_is_a_config_error(runtime: Factory) -> None:
    rt = runtime()
    res = await run(rt, "orderbook", universe="nope")
    assert not res.ok and "unknown universe 'nope'" in res.errors[0]
    with pytest.raises(ConfigError, match="either universe"):
        await run(rt, "orderbook", source="sim")


def test_contract_quantities_become_base_units_so_depth_is_quote_value() -> None:
    book = np.array([[50_000.0, 3.0], [40_000.0, 2.0]])
    assert in_base_units(book, None, False) is book  # spot: already base
    linear = in_base_units(book, 0.01, False)  # OKX BTC-USDT-SWAP: 0.01 BTC a contract
    assert linear[:, 1].tolist() == pytest.approx([0.03, 0.02])
    inverse = in_base_units(book, 100.0, True)  # Binance COIN-M BTC: 100 USD a contract
    assert (inverse[:, 0] * inverse[:, 1]).tolist() == pytest.approx([300.0, 200.0])
    assert inverse[:, 0].tolist() == book[:, 0].tolist()


async def test_books_for_source_and_symbols_go_where_a_scan_reads_them(
        runtime: Factory) -> None:
    """The sim's series live in store ``candles``, not the default ``main``: a universe on
    that source (no store of its own) reads ``candles``, so the job writes there."""
    from candlekeep.scans.universe import universe_store

    rt = runtime(stores={"main": {"type": "duckdb", "path": "data/main.duckdb"},
                         "candles": {"type": "duckdb", "path": "data/candles.duckdb"}},
                 series=[{"source": "sim", "symbols": ["ETH/USDT"], "timeframes": ["1h"],
                          "start": "2025-03-01", "store": "candles"}],
                 universes={"u": {"source": "sim", "symbols": ["ETH/USDT"]}})
    res = await run(rt, "orderbook", source="sim", symbols=["ETH/USDT"])
    assert res.ok, res.errors
    assert res.details["store"] == "candles" == universe_store(rt.config, "u")
    books = rt.store(universe_store(rt.config, "u")).read(ORDERBOOK_SNAPSHOTS)
    assert books["symbol"].to_pylist() == ["ETH/USDT"]
    assert rt.store("main").read(ORDERBOOK_SNAPSHOTS).num_rows == 0
