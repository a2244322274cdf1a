"""CoinGecko's data, deterministic: chart points and OHLC candles keyed by coin id.

Everything comes from the shared candle generator (``CandleGenerator``) under the coin's
``series`` name, so a test computes exactly what a request should return:

* **prices** are the generator's price at the minute the point falls in;
* **market caps** are price x the coin's constant circulating supply;
* **total volumes** are rolling 24 h totals, as CoinGecko's are ([range]: "24hrs volume"):
  the sum of the quote volume of the 24 hourly candles before the point's hour, never the
  volume of an interval;
* **OHLC candles** are the generator's candles of the body's width (4-day bodies are four
  daily candles merged), stamped with their **close** time ([ohlc]: "The timestamp in the
  response indicates the close time"), without volume.

Point times. Daily points sit at 00:00 UTC exactly ([range]: "daily data (00:00 UTC)"),
and a range that reaches the present ends with one more point at the present moment (seen
in recorded replies: daily points then one at the request time; the sim stamps it at the
range's end, capped at now). 5-minutely and hourly
points are not on round minutes in CoinGecko's replies; the sim models that as a
deterministic offset of up to ``point_jitter_ms`` after each slot (the size of CoinGecko's
real offsets is not published: the sim's own choice). OHLC close times are on the epoch
grid of the body width, closed candles only (the sim's reading; CoinGecko documents no
alignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms as parse_ms
from candlekeep.sim.coingecko.spec import (
    FOUR_DAYS_MS,
    GRANULARITY_MS,
    CoinGeckoSpec,
    CoinSpec,
    Granularity,
    ohlc_candle_ms,
    range_granularity,
)
from candlekeep.sim.generator import F64, I64, CandleGenerator, stable_hash64, uniform

_TIMEFRAME_OF_MS = {30 * MINUTE_MS: "30m", HOUR_MS: "1h", 4 * HOUR_MS: "4h", DAY_MS: "1d"}


@dataclass(frozen=True, slots=True)
class ChartPoints:
    """``market_chart/range``'s three series, one row per point (times in ms UTC)."""

    granularity: Granularity
    ts: I64
    prices: F64
    market_caps: F64
    total_volumes: F64

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True, slots=True)
class OhlcCandles:
    """``/ohlc``'s candles: close time (ms UTC), open, high, low, close; no volume."""

    candle_ms: int
    close_ts: I64
    open: F64
    high: F64
    low: F64
    close: F64

    def __len__(self) -> int:
        return int(self.close_ts.shape[0])


class CoinGeckoModel:
    """The truth of one sim: what exists for each coin, given ``now``."""

    def __init__(self, spec: CoinGeckoSpec, generator: CandleGenerator) -> None:
        self.spec = spec
        self.generator = generator
        self.seed = generator.seed

    def coin(self, coin_id: str) -> CoinSpec:
        coin = self.spec.coin(coin_id)
        if coin is None:
            raise KeyError(f"the CoinGecko sim lists no coin id {coin_id!r}")
        return coin

    def listed_ms(self, coin_id: str) -> int:
        return listed_ms_of(self.coin(coin_id))

    # ------------------------------------------------------------ chart points

    def chart(self, coin_id: str, from_ms: int, to_ms: int, now_ms: int,
              granularity: Granularity | None = None) -> ChartPoints:
        """The points ``market_chart/range`` returns for ``[from_ms, to_ms]`` at ``now_ms``:
        auto granularity unless one is forced (``interval``), nothing before the coin's
        listing or after now, plus the present point when the range reaches into the
        current second (queries carry whole seconds), stamped ``min(to_ms, now_ms)``."""
        coin = self.coin(coin_id)
        g = granularity or range_granularity(from_ms, to_ms, now_ms)
        step = GRANULARITY_MS[g]
        listed = listed_ms_of(coin)
        lo = max(from_ms, listed)
        hi = min(to_ms, now_ms)
        if hi < lo:
            return self._points(coin, g, np.empty(0, dtype=np.int64))
        first_slot = (lo - step) // step * step  # a jittered point may fall into [lo, ...)
        slots = np.arange(first_slot, hi + 1, step, dtype=np.int64)
        slots = slots[slots >= listed]
        ts = slots + self._jitter(coin, g, slots)
        ts = ts[(ts >= lo) & (ts <= hi)]
        if to_ms >= now_ms // 1000 * 1000 and hi >= lo and (len(ts) == 0 or ts[-1] < hi):
            ts = np.append(ts, np.int64(hi))
        return self._points(coin, g, ts)

    def _jitter(self, coin: CoinSpec, g: Granularity, slots: I64) -> I64:
        if g == "1d" or self.spec.point_jitter_ms <= 0:
            return np.zeros_like(slots)
        key = stable_hash64("coingecko-point", self.seed, coin.id, g)
        jitter = min(self.spec.point_jitter_ms, GRANULARITY_MS[g] - 1)
        return (uniform(key, slots) * jitter).astype(np.int64)

    def _points(self, coin: CoinSpec, g: Granularity, ts: I64) -> ChartPoints:
        prices = self.prices(coin.id, ts)
        return ChartPoints(g, ts, prices, prices * coin.supply, self.volume_24h(coin.id, ts))

    def prices(self, coin_id: str, ts: I64) -> F64:
        """The price at each instant: the generator's price at the start of its minute."""
        minutes = ts // MINUTE_MS * MINUTE_MS
        return self.generator.price_at(self.coin(coin_id).series, minutes)

    def volume_24h(self, coin_id: str, ts: I64) -> F64:
        """Rolling 24 h quote volume at each instant: the 24 hourly candles that closed at
        or before the instant's hour."""
        if len(ts) == 0:
            return np.empty(0, dtype=np.float64)
        hours = ts // HOUR_MS * HOUR_MS
        first = int(hours.min()) - DAY_MS
        opens = np.arange(first, int(hours.max()), HOUR_MS, dtype=np.int64)
        qv = self.generator.arrays(self.coin(coin_id).series, "1h", opens).quote_volume
        cum = np.concatenate(([0.0], np.cumsum(qv)))
        end = (hours - first) // HOUR_MS
        total: F64 = np.round(cum[end] - cum[end - 24], 2)
        return total

    # ------------------------------------------------------------ OHLC

    def ohlc(self, coin_id: str, days: int, now_ms: int,
             candle_ms: int | None = None) -> OhlcCandles:
        """The candles ``/ohlc?days=`` returns at ``now_ms``: closed candles of the body
        ``days`` implies (or ``candle_ms``, paid ``interval=hourly|daily``) whose close
        falls in ``(now - days, now]``, none opening before the coin's listing."""
        coin = self.coin(coin_id)
        width = candle_ms or ohlc_candle_ms(days)
        last_close = now_ms // width * width
        first_close = (now_ms - days * DAY_MS) // width * width + width
        listed = listed_ms_of(coin)
        first_close = max(first_close, -(-listed // width) * width + width)
        if last_close < first_close:
            empty = np.empty(0, dtype=np.float64)
            return OhlcCandles(width, np.empty(0, dtype=np.int64), empty, empty, empty, empty)
        closes = np.arange(first_close, last_close + 1, width, dtype=np.int64)
        opens = closes - width
        if width == FOUR_DAYS_MS:
            days_open = (opens[:, None] + np.arange(4, dtype=np.int64)[None, :] * DAY_MS)
            a = self.generator.arrays(coin.series, "1d", days_open.ravel())
            shape = days_open.shape
            return OhlcCandles(width, closes, a.open.reshape(shape)[:, 0],
                               a.high.reshape(shape).max(axis=1),
                               a.low.reshape(shape).min(axis=1),
                               a.close.reshape(shape)[:, -1])
        a = self.generator.arrays(coin.series, _TIMEFRAME_OF_MS[width], opens)
        return OhlcCandles(width, closes, a.open, a.high, a.low, a.close)


def listed_ms_of(coin: CoinSpec) -> int:
    return parse_ms(coin.listed)
