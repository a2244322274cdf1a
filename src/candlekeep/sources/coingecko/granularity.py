"""Which timeframes CoinGecko can give, and how to ask so that the wanted one comes back.

CoinGecko has no interval parameter on its public plans: the width of what comes back
follows from the request ([range] and [ohlc] in ``sim.coingecko.spec`` name the pages):

* ``market_chart/range``: 5-minutely when ``from`` is within the last 24 h and the span is
  at most a day; hourly up to 90 days; daily (00:00 UTC) above 90 days;
* ``/ohlc?days=N`` (the last N days, no ``from``; N one of 1/7/14/30/90/180/365/max, any
  other is refused with a 400): 30-minute bodies for 1 day, 4-hour for 7-30, 4-day
  beyond; paid plans (the pro host) may add ``interval=hourly|daily`` for some of those.

So a plan picks the request ranges (``chart_ranges``, ``ohlc_request``) and the reply's
spacing says what actually came back (``detect_step``): a job stores under that, never
under the timeframe it wanted. Nothing here imports more than the standard library, so the
config loader checks timeframes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS

Plan = Literal["demo", "pro"]
Endpoint = Literal["market_chart", "ohlc"]

CHART_TIMEFRAMES = ("5m", "1h", "1d")
"""What ``market_chart/range`` gives on every plan."""
OHLC_TIMEFRAMES: dict[Plan, tuple[str, ...]] = {"demo": ("30m", "4h"),
                                                "pro": ("30m", "1h", "4h", "1d")}
"""What ``/ohlc`` gives: 30m and 4h bodies by ``days``; 1h and 1d by ``interval`` on paid
plans only (the 4-day bodies of longer spans are no candlekeep timeframe)."""
TIMEFRAME_MS = {"5m": 5 * MINUTE_MS, "30m": 30 * MINUTE_MS, "1h": HOUR_MS,
                "4h": 4 * HOUR_MS, "1d": DAY_MS, "4d": 4 * DAY_MS}

FIVE_MIN_REACH_MS = DAY_MS - MINUTE_MS
"""How far back a 5-minutely request starts from the moment it is sent: the last 24 h
less a minute, so it still counts as "from current time" when it reaches CoinGecko a
little later (``ChartRange.from_at``)."""
HOURLY_CHUNK_MS = 89 * DAY_MS
"""Hourly chunks stay below CoinGecko's 90-day boundary (its docs give no finer one)."""
HOURLY_MIN_SPAN_MS = DAY_MS + HOUR_MS
"""An hourly request spans more than a day: a day from now would come back 5-minutely."""
DAILY_MIN_SPAN_MS = 91 * DAY_MS
"""A daily request spans more than 90 days: shorter ones come back hourly."""
DAILY_CHUNK_MS = 365 * DAY_MS
OHLC_DAYS: dict[str, tuple[str | None, tuple[int, ...]]] = {
    "30m": (None, (1,)), "4h": (None, (7, 14, 30)),
    "1h": ("hourly", (1, 7, 14, 30, 90)), "1d": ("daily", (1, 7, 14, 30, 90, 180))}
"""Per OHLC timeframe: the ``interval`` (paid plans; None: the automatic body width) and
the documented ``days`` values that give it ([ohlc]: days is one of 1/7/14/30/90/180/365/
max; 1-2 days are 30-minute bodies, 3-30 four-hour ones)."""
DEMO_HISTORY_MS = 365 * DAY_MS
"""The Demo plan and keyless calls reach back 365 days (error 10012 beyond)."""


def possible(plan: Plan) -> str:
    """The timeframes a plan can give, in words, for error messages."""
    ohlc = "/".join(OHLC_TIMEFRAMES[plan])
    extra = " (1h/1d OHLC on paid plans only)" if plan == "demo" else ""
    return f"5m (last 24 h only), 1h, 1d, and {ohlc} OHLC{extra}"


def default_endpoint(timeframe: str) -> Endpoint:
    return "market_chart" if timeframe in CHART_TIMEFRAMES else "ohlc"


def timeframe_problem(plan: Plan, timeframe: str, endpoint: Endpoint | None = None) -> str | None:
    """Why ``plan`` cannot give ``timeframe`` (from ``endpoint``), or None when it can.
    Without an endpoint the problem is CoinGecko's as a whole, not the default endpoint's."""
    if endpoint is None:
        if timeframe in CHART_TIMEFRAMES or timeframe in OHLC_TIMEFRAMES[plan]:
            return None
        return (f"CoinGecko cannot give {timeframe} on the {plan} plan (it decides the "
                "granularity by the range asked)")
    served = CHART_TIMEFRAMES if endpoint == "market_chart" else OHLC_TIMEFRAMES[plan]
    if timeframe in served:
        return None
    return (f"CoinGecko's {endpoint} cannot give {timeframe} on the {plan} plan "
            f"(CoinGecko decides the granularity by the range asked)")


@dataclass(frozen=True, slots=True)
class ChartRange:
    """One ``market_chart/range`` request: ``[from_ms, to_ms]`` asked, of which the points
    in ``[keep_from, keep_to)`` are wanted (a request may reach further to get the width)."""

    from_ms: int
    to_ms: int
    keep_from: int
    keep_to: int
    recent: bool = False
    """A 5-minutely range: its ``from`` is only good within the last 24 h of the moment the
    request is sent (``from_at``), which may be minutes after the plan (the limiter)."""

    def from_at(self, send_ms: int) -> int:
        """The ``from`` to send at ``send_ms``: a recent range's start moved up so it is
        still within the last 24 h (points older than that come only hourly)."""
        if not self.recent:
            return self.from_ms
        return min(max(self.from_ms, send_ms - FIVE_MIN_REACH_MS), self.to_ms)


def history_start(plan: Plan, now_ms: int) -> int | None:
    """The oldest time the plan reaches (None: unlimited)."""
    return now_ms - DEMO_HISTORY_MS + HOUR_MS if plan == "demo" else None


def chart_ranges(timeframe: str, start_ms: int, end_ms: int,
                 now_ms: int, plan: Plan) -> tuple[list[ChartRange], list[str]]:
    """Requests that bring ``timeframe`` points for ``[start_ms, end_ms)``, and warnings
    for parts no request can bring (5-minutely beyond 24 h, before the plan's history)."""
    warnings: list[str] = []
    end = min(end_ms, now_ms)
    oldest = history_start(plan, now_ms)
    if oldest is not None and start_ms < oldest:
        warnings.append(f"the {plan} plan reaches back 365 days: {timeframe} points start "
                        f"there, not at the requested start")
        start_ms = oldest
    if timeframe == "5m":
        reach = now_ms - FIVE_MIN_REACH_MS
        if start_ms < reach:
            warnings.append("CoinGecko gives 5-minutely points for the last 24 h only: "
                            "older ones cannot be had")
            start_ms = reach
        if end <= start_ms:
            return [], warnings
        return [ChartRange(start_ms, now_ms, start_ms, end, recent=True)], warnings
    if end <= start_ms:
        return [], warnings
    chunk, min_span = ((HOURLY_CHUNK_MS, HOURLY_MIN_SPAN_MS) if timeframe == "1h"
                       else (DAILY_CHUNK_MS, DAILY_MIN_SPAN_MS))
    out = []
    for lo in range(start_ms, end, chunk):
        hi = min(lo + chunk, end)
        ask_from, ask_to = lo, hi
        if ask_to - ask_from < min_span:
            ask_from = ask_to - min_span
            if oldest is not None and ask_from < oldest:  # reach forward instead
                ask_from, ask_to = lo, lo + min_span
        out.append(ChartRange(ask_from, ask_to, lo, hi))
    return out, warnings


@dataclass(frozen=True, slots=True)
class OhlcRequest:
    days: int
    interval: str | None
    """``hourly``/``daily`` (paid plans), None for the automatic body width."""


def ohlc_request(timeframe: str, start_ms: int, now_ms: int,
                 plan: Plan) -> tuple[OhlcRequest, list[str]]:
    """The ``/ohlc`` request whose candles cover ``start_ms`` onwards at ``timeframe``
    (OHLC only ever reaches back from now), and a warning when it cannot reach that far."""
    need = max(1, -(-(now_ms - start_ms) // DAY_MS))
    interval, allowed = OHLC_DAYS[timeframe]
    days = next((d for d in allowed if d >= need), allowed[-1])
    reach = "24 h" if allowed[-1] == 1 else f"{allowed[-1]} days"
    warnings = ([f"CoinGecko's {timeframe} OHLC reaches back {reach} only: older candles "
                 "cannot be had"] if need > allowed[-1] else [])
    return OhlcRequest(days, interval), warnings


def detect_step(ts: list[int]) -> int | None:
    """The spacing of a reply's times, snapped to the widths CoinGecko uses (5m, 30m, 1h,
    4h, 1d, 4d); None for fewer than two points or a spacing that is none of them.

    The median gap, so a missing point or the extra "now" point a range reaching the
    present ends with does not move it."""
    if len(ts) < 2:
        return None
    gaps = sorted(b - a for a, b in pairwise(ts))
    median = gaps[len(gaps) // 2]
    for width in TIMEFRAME_MS.values():
        if 0.75 * width <= median <= 1.25 * width:
            return width
    return None


def name_of(step_ms: int | None) -> str | None:
    for name, width in TIMEFRAME_MS.items():
        if width == step_ms:
            return name
    return None


__all__ = ["CHART_TIMEFRAMES", "OHLC_TIMEFRAMES", "ChartRange", "Endpoint", "OhlcRequest",
           "Plan", "chart_ranges", "default_endpoint", "detect_step", "name_of",
           "ohlc_request", "possible", "timeframe_problem"]
