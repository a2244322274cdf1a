"""Deterministic candles: a pure function of (seed, symbol, timeframe, open time).

Any candle can be computed on its own, so the simulated exchange needs no storage and a test
can ask for the expected candles of any range and compare them with what a source fetched.

Price model: log price = log(base) + a sum of sinusoids with periods from minutes to a year
(spectral synthesis of a random-walk-like path) + small per-minute hash noise. The price is
defined at every minute boundary, and a candle's open and close are the prices at its two
ends, so consecutive candles join exactly (close of one = open of the next) and every
timeframe agrees on the price at a given instant. High, low and volume are hash noise around
that path. Prices are rounded to a per-symbol tick so they survive a round trip through the
decimal strings of an exchange's JSON.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from candlekeep.core.schema import candles_from_columns
from candlekeep.core.timeframes import MINUTE_MS, parse_timeframe

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]

_BASE_PRICES = {"BTC": 40_000.0, "ETH": 2_500.0, "SOL": 100.0, "BNB": 300.0, "XRP": 0.5}
_BASE_VOLUMES_QUOTE = 2_000_000.0  # quote volume per minute around which volume wanders

# Periods (minutes) and amplitudes (log-price) of the smooth component. Amplitude grows like
# sqrt(period), as it does for a random walk's typical excursion over that horizon.
_PERIODS_MIN = np.array([13.0, 47.0, 170.0, 610.0, 2_200.0, 7_900.0, 28_000.0, 100_000.0,
                         360_000.0], dtype=np.float64)
_AMPLITUDES = 0.0009 * np.sqrt(_PERIODS_MIN)
_NOISE_SIGMA = 0.0006  # per-minute idiosyncratic log noise

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash that is the same in every process (``hash()`` is salted per process)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def mix64(x: U64) -> U64:
    """splitmix64 finaliser, vectorised: turns counters into well-spread 64-bit noise."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform(key: int, counters: I64 | U64) -> F64:
    """Uniform [0, 1) noise, one value per counter, determined by ``key``."""
    h = mix64(counters.astype(np.uint64) ^ np.uint64(key))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(key: int, counters: I64 | U64) -> F64:
    """Standard normal noise via Box-Muller over two independent hash streams."""
    u1 = uniform(key, counters)
    u2 = uniform(key ^ 0x5DEECE66D, counters)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def base_asset(symbol: str) -> str:
    return symbol.split("/", 1)[0]


def base_price(seed: int, symbol: str) -> float:
    known = _BASE_PRICES.get(base_asset(symbol))
    if known is not None:
        return known
    u = stable_hash64("base-price", seed, base_asset(symbol)) / 2**64
    return float(10 ** (-2.0 + 5.0 * u))


def price_decimals(seed: int, symbol: str) -> int:
    """Decimals of the symbol's tick: about 7 significant digits, between 2 and 8."""
    magnitude = math.floor(math.log10(base_price(seed, symbol)))
    return max(2, min(8, 6 - magnitude))


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """Column arrays of candles, the cheap form handed between sim components."""

    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    quote_volume: F64
    trades: I64

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> CandleArrays:
        return CandleArrays(self.ts[index], self.open[index], self.high[index],
                            self.low[index], self.close[index], self.volume[index],
                            self.quote_volume[index], self.trades[index])

    def to_table(self, source: str, symbol: str, timeframe: str, ingested_at_ms: int) -> pa.Table:
        return candles_from_columns(
            source, symbol, timeframe, self.ts, self.open, self.high, self.low, self.close,
            self.volume, ingested_at_ms, quote_volume=self.quote_volume, trades=self.trades)


class CandleGenerator:
    """Candles for one seed; per-symbol constants are cached, candles are not."""

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self._consts: dict[str, tuple[int, float, F64, int]] = {}

    def _symbol_consts(self, symbol: str) -> tuple[int, float, F64, int]:
        consts = self._consts.get(symbol)
        if consts is None:
            key = stable_hash64("candles", self.seed, symbol)
            phases = uniform(key, np.arange(len(_PERIODS_MIN), dtype=np.int64)) * 2 * np.pi
            consts = (key, math.log(base_price(self.seed, symbol)), phases,
                      price_decimals(self.seed, symbol))
            self._consts[symbol] = consts
        return consts

    def price_at(self, symbol: str, t_ms: I64) -> F64:
        """Price at minute boundaries ``t_ms`` (rounded to the symbol's tick)."""
        key, log_base, phases, decimals = self._symbol_consts(symbol)
        minutes = (t_ms // MINUTE_MS).astype(np.float64)
        angles = (2 * np.pi / _PERIODS_MIN)[None, :] * minutes[:, None] + phases[None, :]
        smooth = (np.sin(angles) * _AMPLITUDES[None, :]).sum(axis=1)
        noise = _NOISE_SIGMA * normal(key, t_ms // MINUTE_MS)
        price = np.exp(log_base + smooth + noise)
        tick = 10.0 ** -decimals
        rounded: F64 = np.maximum(np.round(price, decimals), tick)
        return rounded

    def arrays(self, symbol: str, timeframe: str, ts_ms: I64) -> CandleArrays:
        """Candles opening at ``ts_ms`` (which must be on the timeframe's grid)."""
        tf = parse_timeframe(timeframe)
        ts = np.asarray(ts_ms, dtype=np.int64)
        key, _, _, decimals = self._symbol_consts(symbol)
        open_ = self.price_at(symbol, ts)
        close = self.price_at(symbol, ts + tf.ms)
        minutes = tf.ms / MINUTE_MS
        # Wick size scales with sqrt(duration), like the range of a random walk.
        spread = 0.0015 * math.sqrt(minutes)
        tf_key = key ^ stable_hash64("tf", timeframe)
        up = uniform(tf_key ^ 0x1, ts) * spread
        down = uniform(tf_key ^ 0x2, ts) * spread
        tick = 10.0 ** -decimals
        high = np.round(np.maximum(open_, close) * (1.0 + up), decimals)
        low = np.maximum(np.round(np.minimum(open_, close) * (1.0 - down), decimals), tick)
        mid = (open_ + high + low + close) / 4.0
        quote_per_minute = _BASE_VOLUMES_QUOTE * np.exp(0.6 * normal(tf_key ^ 0x3, ts))
        volume = np.round(quote_per_minute * minutes / mid, 5)
        quote_volume = np.round(volume * mid, 4)
        trades = np.floor(quote_volume / 2_500.0 + uniform(tf_key ^ 0x4, ts) * 10).astype(np.int64)
        return CandleArrays(ts, open_, high, low, close, volume, quote_volume, trades)

    def table(self, symbol: str, timeframe: str, ts_ms: I64, *, source: str = "sim",
              ingested_at_ms: int = 0) -> pa.Table:
        return self.arrays(symbol, timeframe, ts_ms).to_table(
            source, symbol, timeframe, ingested_at_ms)


def grid(timeframe: str, start_ms: int, end_ms: int) -> I64:
    """Open times on the timeframe's grid in ``[start_ms, end_ms)``."""
    tf = parse_timeframe(timeframe)
    first = tf.ceil(start_ms)
    if end_ms <= first:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, end_ms, tf.ms, dtype=np.int64)


def generate_candles(seed: int, symbol: str, timeframe: str, start_ms: int, end_ms: int, *,
                     source: str = "sim", ingested_at_ms: int = 0) -> pa.Table:
    """Every candle of ``[start_ms, end_ms)``, ignoring listing dates and holes."""
    return CandleGenerator(seed).table(symbol, timeframe, grid(timeframe, start_ms, end_ms),
                                       source=source, ingested_at_ms=ingested_at_ms)
