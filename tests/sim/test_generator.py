"""The generator is a pure function of (seed, symbol, timeframe, open time)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.timeframes import HOUR_MS, MINUTE_MS, parse_timeframe
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.generator import CandleGenerator, generate_candles, grid
from candlekeep.sources.validate import validate_candles

START = to_ms("2024-03-01")
FAR_FUTURE = to_ms("2100-01-01")


def col(table: pa.Table, name: str) -> np.ndarray:
    values: np.ndarray = table[name].to_numpy()
    return values


def test_same_inputs_same_candles_and_seed_matters() -> None:
    a = generate_candles(7, "BTC/USDT", "1m", START, START + 500 * MINUTE_MS)
    b = generate_candles(7, "BTC/USDT", "1m", START, START + 500 * MINUTE_MS)
    c = generate_candles(8, "BTC/USDT", "1m", START, START + 500 * MINUTE_MS)
    assert a.equals(b)
    assert not a.equals(c)
    assert a.schema.equals(CANDLE_SCHEMA)
    assert a.num_rows == 500


def test_each_candle_depends_only_on_its_own_open_time() -> None:
    whole = generate_candles(7, "ETH/USDT", "5m", START, START + 300 * 5 * MINUTE_MS)
    part = generate_candles(7, "ETH/USDT", "5m", START + 100 * 5 * MINUTE_MS,
                            START + 150 * 5 * MINUTE_MS)
    assert whole.slice(100, 50).equals(part)
    gen = CandleGenerator(7)
    scattered = np.array([START + 7 * 5 * MINUTE_MS, START + 211 * 5 * MINUTE_MS], np.int64)
    picked = gen.table("ETH/USDT", "5m", scattered)
    assert picked.slice(0, 1).equals(whole.slice(7, 1))
    assert picked.slice(1, 1).equals(whole.slice(211, 1))


@pytest.mark.parametrize("timeframe", ["1m", "15m", "1h", "4h", "1d", "1w"])
@pytest.mark.parametrize("symbol", ["BTC/USDT", "SOL/USDT", "PEPE/USDT", "BTC/USDT:USDT"])
def test_candles_are_valid(symbol: str, timeframe: str) -> None:
    tf = parse_timeframe(timeframe)
    table = generate_candles(3, symbol, timeframe, START - 300 * tf.ms, START + 700 * tf.ms)
    o, h, lo, c = (col(table, n) for n in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (lo > 0).all()
    assert (col(table, "volume") >= 0).all()
    assert table["quote_volume"].null_count == 0
    assert table["trades"].null_count == 0
    assert (col(table, "trades") >= 0).all()
    # The validator every source applies accepts them as they are.
    checked = validate_candles(table, source="sim", symbol=symbol, timeframe=timeframe,
                               now_ms=FAR_FUTURE)
    assert checked.num_rows == table.num_rows


def test_consecutive_candles_join_and_move_plausibly() -> None:
    table = generate_candles(7, "BTC/USDT", "1m", START, START + 5000 * MINUTE_MS)
    o, c = col(table, "open"), col(table, "close")
    assert (c[:-1] == o[1:]).all()
    step = np.abs(np.log(c / o))
    assert step.max() < 0.02  # no 2% one-minute jumps
    assert step.mean() > 1e-5  # but it does move
    assert o.min() > 1_000 and o.max() < 1_000_000


def test_timeframes_agree_on_the_price_at_each_instant() -> None:
    gen = CandleGenerator(7)
    hours = grid("1h", START, START + 24 * HOUR_MS)
    minutes = grid("1m", START, START + 24 * HOUR_MS)
    h = gen.table("SOL/USDT", "1h", hours)
    m = gen.table("SOL/USDT", "1m", minutes)
    assert col(h, "open").tolist() == col(m, "open")[::60].tolist()
    assert col(h, "close").tolist() == col(m, "close")[59::60].tolist()


def test_grid_respects_weekly_offset_and_bounds() -> None:
    weeks = grid("1w", to_ms("2024-01-01"), to_ms("2024-02-01"))
    assert all(parse_timeframe("1w").on_grid(int(t)) for t in weeks)
    assert int(weeks[0]) == to_ms("2024-01-01")  # a Monday
    assert grid("1h", START, START).shape == (0,)
    table = generate_candles(7, "BTC/USDT", "1h", START + 1, START + 2 * HOUR_MS)
    assert pc.cast(table["ts"], pa.int64()).to_pylist() == [START + HOUR_MS]
