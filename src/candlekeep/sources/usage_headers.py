"""What an HTTP reply's headers say about the rate budget, for every dialect we meet.

Exchanges and data APIs report their counters in different headers:

- Binance: ``X-MBX-USED-WEIGHT-<n><unit>`` (weight used in the current window of n
  seconds, minutes, hours or days, one header per window it enforces;
  ``X-MBX-ORDER-COUNT-*`` counts orders, not reads, and is ignored);
- CoinGecko and many REST APIs: ``x-ratelimit-limit`` / ``-remaining``;
- the IETF drafts: ``RateLimit-Limit`` / ``-Remaining``, the combined
  ``RateLimit: limit=100, remaining=50`` and the later ``RateLimit: "name";r=50`` with
  ``RateLimit-Policy: "name";q=100;w=60``;
- ``Retry-After``: seconds, or an HTTP date.

``parse_usage`` turns any of them into one ``Usage``; fields a reply does not state stay
None. When a window's counts reset (``*-Reset``: seconds, epoch seconds or milliseconds,
or a date string, by provider) is not read: the limiters keep their own windows. Pure
functions (the clock is a parameter), so a limiter or a health view can read a reply
the same way whatever the provider.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MBX = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$")


@dataclass(frozen=True, slots=True)
class Usage:
    """The budget as one reply reports it."""

    used: int | None = None
    """Weight (or requests) counted in the current window, this request included."""
    limit: int | None = None
    """The window's budget as the server states it (it may enforce less)."""
    remaining: int | None = None
    window_s: float | None = None
    """Length of the window ``used`` is for, when stated."""
    windows: tuple[tuple[float, int], ...] = ()
    """Binance: (window seconds, used weight) for every window a reply reports."""
    retry_after_s: float | None = None
    """Seconds the server asks us to wait (Retry-After)."""

    @property
    def empty(self) -> bool:
        return not self.windows and all(
            v is None for v in (self.used, self.limit, self.remaining, self.window_s,
                                self.retry_after_s))

    def used_in(self, window_s: float) -> int | None:
        """The weight used in a window of ``window_s``, the one a limiter keeps: a count
        for another window (Binance's daily one next to its minute) would not compare
        with the limiter's books, and neither does one whose window is not stated."""
        for window, used in self.windows:
            if math.isclose(window, window_s):
                return used
        if self.window_s is not None and math.isclose(self.window_s, window_s):
            return self.used
        return None


def parse_usage(headers: Mapping[str, Any] | None, now_s: float) -> Usage:
    """Every rate-limit figure in ``headers`` (any key case); ``now_s`` is the time in epoch
    seconds, to turn an HTTP-date Retry-After into seconds from now."""
    h = {str(k).lower(): str(v).strip() for k, v in (headers or {}).items()}
    windows = _binance_used(h)
    limit = _int(h.get("x-ratelimit-limit"))
    remaining = _int(h.get("x-ratelimit-remaining"))
    ietf = _ietf(h)
    limit = limit if limit is not None else ietf.limit
    remaining = remaining if remaining is not None else ietf.remaining
    used = max(0, limit - remaining) if limit is not None and remaining is not None else None
    window_s = ietf.window_s if used is not None else None
    if len(windows) == 1:
        window_s, used = windows[0]
    return Usage(used=used, limit=limit, remaining=remaining, window_s=window_s,
                 windows=windows, retry_after_s=parse_retry_after(h.get("retry-after"), now_s))


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Retry-After as seconds from now: delta seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable, never negative."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime has no zone: an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)


def _binance_used(h: Mapping[str, str]) -> tuple[tuple[float, int], ...]:
    """(window seconds, used weight) of every Binance used-weight header, shortest first."""
    out = []
    for key, value in h.items():
        m = _MBX.match(key)
        used = _int(value)
        if m is not None and used is not None:
            out.append((int(m.group(1)) * _UNIT_S[m.group(2)], used))
    return tuple(sorted(out))


def _ietf(h: Mapping[str, str]) -> Usage:
    """The IETF draft headers: separate fields, or the combined ``RateLimit`` field with
    ``RateLimit-Policy`` giving the quota and window."""
    limit = _int(h.get("ratelimit-limit"))
    remaining = _int(h.get("ratelimit-remaining"))
    combined = _params(h.get("ratelimit", ""))
    policy = _params(h.get("ratelimit-policy", ""))
    if limit is None:
        limit = _int(combined.get("limit") or policy.get("q") or policy.get("limit"))
        if limit is None and h.get("ratelimit-policy"):
            limit = _int(h["ratelimit-policy"].split(";")[0].split(",")[0])
    if remaining is None:
        remaining = _int(combined.get("remaining") or combined.get("r"))
    window = _float(policy.get("w") or policy.get("window"))
    return Usage(limit=limit, remaining=remaining, window_s=window)


def _params(value: str) -> dict[str, str]:
    """``a=1, b=2`` or ``"name";r=1;t=2`` as a dict (the first policy only)."""
    out: dict[str, str] = {}
    for part in re.split(r"[;,]", value):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in out:
            out[key] = val.strip().strip('"')
    return out


def _int(value: str | None) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 and math.isfinite(number) else None


__all__ = ["Usage", "parse_retry_after", "parse_usage"]
