"""How complete a window of stored CoinGecko points is, per coin.

The rows of one read (every coin and timeframe of a source in the window) are split by
coin here, so a quality run costs one query and no request to CoinGecko: a configured coin
matches stored rows by coin id, else by symbol (one id only: two ids under one symbol are
ambiguous, as they are on CoinGecko).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from candlekeep.core.timeutil import fmt_duration, fmt_ms
from candlekeep.sources.coingecko.granularity import detect_step, name_of

MAX_HOLES_LISTED = 5


@dataclass
class CoinQuality:
    coin: str
    coin_id: str | None
    timeframe: str
    points: int
    expected: int
    missing: int
    holes: list[tuple[int, int]]
    """Missing slots as inclusive ``(first, last)`` ranges, oldest first."""
    granularity_seen: str | None
    """What the stored points' spacing says (None: fewer than two points)."""
    other_timeframes: dict[str, int] = field(default_factory=dict)
    """Rows of this coin in the window stored under other timeframes (what came back
    instead of the one asked for)."""
    newest_ms: int | None = None
    newest_age_ms: int | None = None
    null_values: int = 0
    zero_values: int = 0
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"coin_id": self.coin_id, "timeframe": self.timeframe, "points": self.points,
                "expected": self.expected, "missing": self.missing,
                "holes": [[fmt_ms(a), fmt_ms(b)] for a, b in self.holes[:MAX_HOLES_LISTED]],
                "granularity_seen": self.granularity_seen,
                "other_timeframes": self.other_timeframes,
                "newest": fmt_ms(self.newest_ms) if self.newest_ms is not None else None,
                "newest_age": (fmt_duration(self.newest_age_ms)
                               if self.newest_age_ms is not None else None),
                "null_values": self.null_values, "zero_values": self.zero_values,
                "problem": self.problem}

    def line(self) -> str:
        return (f"coin={self.coin} id={self.coin_id} tf={self.timeframe} "
                f"points={self.points}/{self.expected} missing={self.missing} "
                f"seen={self.granularity_seen} "
                f"newest_age={self.as_dict()['newest_age']} nulls={self.null_values} "
                f"zeros={self.zero_values}")


def summarise(rows: pa.Table, coin: str, timeframe: str, step_ms: int, lo: int, hi: int,
              now_ms: int, value: str) -> CoinQuality:
    """``coin``'s quality at ``timeframe`` over the grid slots ``[lo, hi)`` from ``rows``
    (every stored row of the source in the window); ``value`` is the price column."""
    ids = pc.unique(rows["coin_id"]).to_pylist()
    coin_id: str | None = coin if coin in ids else None
    problem = None
    if coin_id is None:
        by_symbol = rows.filter(pc.equal(pc.utf8_lower(rows["symbol"]), coin.lower()))
        candidates = sorted(pc.unique(by_symbol["coin_id"]).to_pylist())
        if len(candidates) == 1:
            coin_id = candidates[0]
        elif candidates:
            problem = f"symbol {coin!r} matches ids {', '.join(candidates)}: write the id"
    mine = rows.filter(pc.equal(rows["coin_id"], coin_id or ""))
    others: dict[str, int] = {}
    for tf in pc.unique(mine["timeframe"]).to_pylist():
        if tf != timeframe:
            others[tf] = int(pc.sum(pc.equal(mine["timeframe"], tf)).as_py())
    mine = mine.filter(pc.equal(mine["timeframe"], timeframe))
    ts = sorted(set(pc.cast(mine["ts"], pa.int64()).to_pylist()))
    on_grid = [t for t in ts if t % step_ms == 0 and lo <= t < hi]
    expected = max(0, (hi - lo) // step_ms)
    values = mine[value]
    newest = ts[-1] if ts else None
    return CoinQuality(
        coin=coin, coin_id=coin_id, timeframe=timeframe, points=len(on_grid),
        expected=expected, missing=expected - len(on_grid), holes=_holes(on_grid, lo, hi, step_ms),
        granularity_seen=name_of(detect_step(ts)), other_timeframes=others,
        newest_ms=newest, newest_age_ms=None if newest is None else now_ms - newest,
        null_values=values.null_count,
        zero_values=int(pc.sum(pc.less_equal(values, 0.0)).as_py() or 0),
        problem=problem)


def _holes(present: list[int], lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    holes = []
    cursor = lo
    for t in [*present, hi]:
        if t > cursor:
            holes.append((cursor, t - step))
        cursor = t + step
    return holes


__all__ = ["CoinQuality", "summarise"]
