"""CoinGecko's data as rows: price points and OHLC candles, in datasets of their own.

CoinGecko's points are not exchange candles (no bar volume, CoinGecko picks the width), so
they never enter ``candles``:

* ``coingecko_prices`` (``market_chart/range``): price, market cap and ``volume_24h``,
  CoinGecko's *rolling 24-hour* total volume at that moment (not the volume of the
  interval: summing it over a day counts each trade 24 or 288 times). ``ts`` is the grid
  slot the point belongs to: CoinGecko stamps 5-minutely and hourly points seconds after
  the slot (daily ones at 00:00 UTC), and a slot keeps one row however often it is asked.
* ``coingecko_ohlc`` (``/ohlc``): ``ts`` is the candle's open time, CoinGecko's stamp
  (the close time) less the body width.

``timeframe`` is what the reply's spacing says came back, whatever was asked. Times are
UTC milliseconds throughout: CoinGecko's stamps are UNIX milliseconds.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from candlekeep.core.datasets import Dataset, register
from candlekeep.core.schema import TS_TYPE

F64, STR = pa.float64(), pa.string()


def _key(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


_WHO = [_key("source", STR), _key("coin_id", STR), pa.field("symbol", STR),
        _key("timeframe", STR), _key("ts", TS_TYPE)]
_KEY = ("source", "coin_id", "timeframe", "ts")
_INGESTED = pa.field("ingested_at", TS_TYPE)

COINGECKO_PRICES = register(Dataset("coingecko_prices", pa.schema([
    *_WHO, pa.field("price", F64), pa.field("market_cap", F64), pa.field("volume_24h", F64),
    _INGESTED]), key=_KEY, version="ingested_at", time="ts"))

COINGECKO_OHLC = register(Dataset("coingecko_ohlc", pa.schema([
    *_WHO, pa.field("open", F64), pa.field("high", F64), pa.field("low", F64),
    pa.field("close", F64), _INGESTED]), key=_KEY, version="ingested_at", time="ts"))


class ReplyShapeError(ValueError):
    """A reply that is not what CoinGecko documents."""


def chart_series(reply: Any) -> tuple[list[int], dict[str, dict[int, float | None]]]:
    """``market_chart/range``'s reply: the prices' times (sorted) and each series by time."""
    if not isinstance(reply, dict):
        raise ReplyShapeError(f"expected an object, got {type(reply).__name__}")
    series: dict[str, dict[int, float | None]] = {}
    for name in ("prices", "market_caps", "total_volumes"):
        rows = reply.get(name)
        if not isinstance(rows, list):
            raise ReplyShapeError(f"{name!r} is missing or not a list")
        values: dict[int, float | None] = {}
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and _is_num(row[0])
                    and (row[1] is None or _is_num(row[1]))):
                raise ReplyShapeError(f"{name}: expected [ms, value], got {row!r:.80}")
            values[int(row[0])] = None if row[1] is None else float(row[1])
        series[name] = values
    return sorted(series["prices"]), series


def ohlc_rows(reply: Any) -> list[tuple[int, float, float, float, float]]:
    """``/ohlc``'s reply: ``[close_ms, open, high, low, close]`` rows, sorted by time."""
    if not isinstance(reply, list):
        raise ReplyShapeError(f"expected a list, got {type(reply).__name__}")
    out = []
    for row in reply:
        if not (isinstance(row, list) and len(row) == 5 and all(_is_num(v) for v in row)):
            raise ReplyShapeError(f"expected [ms, open, high, low, close], got {row!r:.80}")
        out.append((int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4])))
    return sorted(out)


def prices_table(source: str, coin_id: str, symbol: str, timeframe: str, step_ms: int,
                 ts: list[int], series: dict[str, dict[int, float | None]], keep_from: int,
                 keep_to: int, now_ms: int) -> pa.Table:
    """Rows of the points whose slot lies in ``[keep_from, keep_to)`` and ended by
    ``now_ms`` (the point a range reaching the present ends with is a live price, not its
    slot's), one per slot (the earliest point of it)."""
    slots: dict[int, int] = {}
    for t in ts:
        slot = t // step_ms * step_ms
        if keep_from <= slot < keep_to and slot + step_ms <= now_ms:
            slots.setdefault(slot, t)
    picked = sorted(slots)
    prices, caps, vols = (series["prices"], series["market_caps"], series["total_volumes"])
    n = len(picked)
    return pa.table({
        "source": [source] * n, "coin_id": [coin_id] * n, "symbol": [symbol] * n,
        "timeframe": [timeframe] * n, "ts": picked,
        "price": [prices.get(slots[s]) for s in picked],
        "market_cap": [caps.get(slots[s]) for s in picked],
        "volume_24h": [vols.get(slots[s]) for s in picked],
        "ingested_at": [now_ms] * n,
    }, schema=COINGECKO_PRICES.schema)


def ohlc_table(source: str, coin_id: str, symbol: str, timeframe: str, step_ms: int,
               rows: list[tuple[int, float, float, float, float]], keep_from: int,
               now_ms: int) -> pa.Table:
    """Rows of the closed candles opening at or after ``keep_from``, stamped with their
    open time."""
    kept = [r for r in rows if r[0] - step_ms >= keep_from and r[0] <= now_ms]
    n = len(kept)
    return pa.table({
        "source": [source] * n, "coin_id": [coin_id] * n, "symbol": [symbol] * n,
        "timeframe": [timeframe] * n, "ts": [r[0] - step_ms for r in kept],
        "open": [r[1] for r in kept], "high": [r[2] for r in kept],
        "low": [r[3] for r in kept], "close": [r[4] for r in kept],
        "ingested_at": [now_ms] * n,
    }, schema=COINGECKO_OHLC.schema)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


__all__ = ["COINGECKO_OHLC", "COINGECKO_PRICES", "ReplyShapeError", "chart_series",
           "ohlc_rows", "ohlc_table", "prices_table"]
